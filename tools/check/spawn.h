// The server that `switchboard check --spawn` runs itself: a temp data dir and one
// fixed port for its whole life, so it can be SIGKILLed and restarted in place while
// the simulated clients reconnect to the same address.
//
// Start/Kill9/Stop must be called from the thread that lives for the whole run (the
// child gets PR_SET_PDEATHSIG, which fires when the forking *thread* exits).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace sb::check {

class SpawnedServer {
 public:
  // `binary` empty: the running executable. `extra_sets`: KEY=VALUE for --set.
  SpawnedServer(std::string binary, std::vector<std::string> extra_sets);
  ~SpawnedServer();  // kills a still-running server; removes the data dir unless kept
  SpawnedServer(const SpawnedServer&) = delete;
  SpawnedServer& operator=(const SpawnedServer&) = delete;

  // First call picks a free port; later calls reuse it. Waits for the
  // `event=listening` log line. False with error() (and the log tail) otherwise.
  bool Start(std::chrono::milliseconds timeout = std::chrono::milliseconds(20000));
  void Kill9();
  // SIGTERM and wait; SIGKILL after `timeout`. The exit status as in WaitStatus.
  int Stop(std::chrono::milliseconds timeout = std::chrono::milliseconds(15000));
  // False once the process has exited (reaped here; see error()).
  bool CheckAlive();

  bool running() const { return pid_ > 0; }
  uint16_t port() const { return port_; }
  const std::string& data_dir() const { return dir_; }
  std::string log_path() const { return dir_ + "/server.log"; }
  const std::string& error() const { return error_; }
  std::string LogTail(size_t lines = 30) const;
  void set_keep_data(bool keep) { keep_data_ = keep; }
  int starts() const { return starts_; }

 private:
  std::string binary_;
  std::vector<std::string> extra_sets_;
  std::string dir_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string error_;
  bool keep_data_ = false;
  int starts_ = 0;
};

}  // namespace sb::check
