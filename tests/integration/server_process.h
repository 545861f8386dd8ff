// Runs the real switchboard binary for a test: its own temp data dir, port 0, logs
// to <dir>/server.log, and the port read back from the `event=listening` log line.
// Owned and driven by one test thread.
//
// Environment: SB_BINARY overrides the binary; SB_TEST_SERVER_ARGS (whitespace-
// separated) is appended to every server's arguments; SB_KEEP_TEST_DATA=1 keeps the
// data dirs (and their server.log) after the run.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sb::test {

class ServerProcess {
 public:
  struct Options {
    // Appended to the fixed test flags (fast password hashing, info logs).
    std::vector<std::string> extra_args;
    std::chrono::milliseconds start_timeout{20000};
  };

  ServerProcess();
  explicit ServerProcess(Options opts);
  // Kills the server if it still runs and removes the data dir (kept when the
  // environment has SB_KEEP_TEST_DATA=1, for post-mortems).
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the binary and waits until it logs that it listens. False (see error())
  // when it exits or stays silent past start_timeout; the log tail is in error().
  bool Start();
  // Start again on the same data dir (a new port).
  bool Restart() { return Start(); }

  // SIGTERM, then wait up to `timeout`. Returns the exit status as WaitExit does.
  std::optional<int> Stop(std::chrono::milliseconds timeout = std::chrono::milliseconds(15000));
  // SIGKILL and reap: a crash with no chance to flush anything.
  void Kill9();
  bool Signal(int sig);
  // Waits for the process to end: its exit code (0..255), or -signal if a signal
  // killed it; nullopt on timeout (the process is left running).
  std::optional<int> WaitExit(std::chrono::milliseconds timeout);

  bool running() const { return pid_ > 0; }
  // Reaps the process if it has died since the last look; false then, with the exit
  // status in error(). Lets a test notice that it crashed the server.
  bool CheckAlive();
  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }
  const std::string& data_dir() const { return dir_; }
  std::string log_path() const { return dir_ + "/server.log"; }
  const std::string& error() const { return error_; }

  // Whole log (every start appends) and its last lines, for failure messages.
  std::string Log() const;
  std::string LogTail(size_t lines = 40) const;

 private:
  Options opts_;
  std::string dir_;
  std::string host_ = "127.0.0.1";
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string error_;
};

}  // namespace sb::test
