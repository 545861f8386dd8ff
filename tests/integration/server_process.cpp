#include "server_process.h"

#include "server_launch.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef SB_BINARY
#define SB_BINARY "build/switchboard"
#endif

namespace sb::test {

namespace {

using Clock = std::chrono::steady_clock;

std::string BinaryPath() {
  // An override lets the same tests run against another build (sanitizers, release).
  if (const char* env = std::getenv("SB_BINARY"); env && *env) return env;
  return SB_BINARY;
}

std::string ReadFrom(const std::string& path, size_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<size_t>(st.st_size);
}

// The value of `key=` in a logfmt line ("" when absent); quotes are stripped.
std::string LogfmtValue(const std::string& line, const std::string& key) {
  size_t pos = 0;
  const std::string needle = key + "=";
  while ((pos = line.find(needle, pos)) != std::string::npos) {
    if (pos == 0 || line[pos - 1] == ' ') break;
    pos += needle.size();
  }
  if (pos == std::string::npos) return {};
  pos += needle.size();
  if (pos < line.size() && line[pos] == '"') {
    size_t end = line.find('"', pos + 1);
    return line.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
  }
  size_t end = line.find(' ', pos);
  return line.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
}

// The port of the first `event=listening addr=127.0.0.1:<port>` line in `log`.
std::optional<uint16_t> ListeningPort(const std::string& log, const std::string& host) {
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (LogfmtValue(line, "event") != "listening") continue;
    std::string addr = LogfmtValue(line, "addr");
    const std::string prefix = host + ":";
    if (addr.rfind(prefix, 0) != 0) continue;
    try {
      int p = std::stoi(addr.substr(prefix.size()));
      if (p > 0 && p < 65536) return static_cast<uint16_t>(p);
    } catch (...) {
    }
  }
  return std::nullopt;
}

std::string DescribeWaitStatus(int code) {
  return code >= 0 ? "exit code " + std::to_string(code)
                   : "killed by signal " + std::to_string(-code) + " (" + strsignal(-code) + ")";
}

}  // namespace

ServerProcess::ServerProcess() : ServerProcess(Options{}) {}

ServerProcess::ServerProcess(Options opts) : opts_(std::move(opts)) {
  char tmpl[] = "/tmp/sb-it-XXXXXX";
  if (char* d = ::mkdtemp(tmpl)) {
    dir_ = d;
  } else {
    error_ = std::string("mkdtemp: ") + std::strerror(errno);
  }
}

ServerProcess::~ServerProcess() {
  if (running()) Kill9();
  const char* keep = std::getenv("SB_KEEP_TEST_DATA");
  if (!dir_.empty() && !(keep && std::string(keep) == "1")) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool ServerProcess::Start() {
  if (dir_.empty()) return false;
  if (running()) {
    error_ = "already running";
    return false;
  }
  port_ = 0;
  const std::string bin = BinaryPath();
  if (::access(bin.c_str(), X_OK) != 0) {
    error_ = "server binary " + bin + " is not executable: " + std::strerror(errno);
    return false;
  }

  std::vector<std::string> args = {bin, "serve", "--listen", host_ + ":0", "--data-dir", dir_};
  for (auto& f : client::HarnessServerFlags()) args.push_back(f);
  args.insert(args.end(), opts_.extra_args.begin(), opts_.extra_args.end());
  // Lets a whole run use other settings (e.g. "--set store.fsync=none") unchanged.
  if (const char* env = std::getenv("SB_TEST_SERVER_ARGS"); env && *env) {
    std::istringstream words(env);
    for (std::string w; words >> w;) args.push_back(w);
  }
  const std::string log = log_path();
  const size_t log_offset = FileSize(log);  // restarts append; look only at new lines
  pid_t pid = client::LaunchLogged(args, log, &error_);
  if (pid < 0) return false;
  pid_ = pid;

  auto deadline = Clock::now() + opts_.start_timeout;
  while (Clock::now() < deadline) {
    if (auto p = ListeningPort(ReadFrom(log, log_offset), host_)) {
      port_ = *p;
      error_.clear();
      return true;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      error_ = "server exited during startup (" + DescribeWaitStatus(code) + "); log tail:\n" +
               LogTail();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  error_ = "no `event=listening addr=" + host_ + ":<port>` log line within " +
           std::to_string(opts_.start_timeout.count()) + " ms; log tail:\n" + LogTail();
  Kill9();
  return false;
}

bool ServerProcess::CheckAlive() {
  if (!running()) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) != pid_) return true;
  pid_ = -1;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  error_ = "server died (" + DescribeWaitStatus(code) + ")";
  return false;
}

bool ServerProcess::Signal(int sig) { return running() && ::kill(pid_, sig) == 0; }

std::optional<int> ServerProcess::WaitExit(std::chrono::milliseconds timeout) {
  if (!running()) return std::nullopt;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    }
    if (r < 0 && errno != EINTR) {
      pid_ = -1;
      return std::nullopt;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::optional<int> ServerProcess::Stop(std::chrono::milliseconds timeout) {
  if (!running()) return std::nullopt;
  Signal(SIGTERM);
  auto code = WaitExit(timeout);
  if (!code) {
    error_ =
        "server did not exit within " + std::to_string(timeout.count()) + " ms of SIGTERM; killed";
    Kill9();
  }
  return code;
}

void ServerProcess::Kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

std::string ServerProcess::Log() const { return dir_.empty() ? "" : ReadFrom(log_path(), 0); }

std::string ServerProcess::LogTail(size_t lines) const {
  std::istringstream in(Log());
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(std::move(line));
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += all[i];
    out += '\n';
  }
  return out;
}

}  // namespace sb::test
