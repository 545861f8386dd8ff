#include "check/spawn.h"

#include "server_launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace sb::check {

namespace {

using SteadyClock = std::chrono::steady_clock;

// A port the kernel just considered free. Another process may take it before the
// server binds, which Start() notices (the server exits) and retries on first start.
uint16_t PickFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  uint16_t port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

size_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

std::string ReadFrom(const std::string& path, size_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "status " + std::to_string(status);
}

}  // namespace

SpawnedServer::SpawnedServer(std::string binary, std::vector<std::string> extra_sets)
    : binary_(std::move(binary)), extra_sets_(std::move(extra_sets)) {
  char tmpl[] = "/tmp/sb-check-XXXXXX";
  if (char* d = ::mkdtemp(tmpl)) {
    dir_ = d;
  } else {
    error_ = std::string("mkdtemp: ") + std::strerror(errno);
  }
}

SpawnedServer::~SpawnedServer() {
  Kill9();
  if (!dir_.empty() && !keep_data_) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool SpawnedServer::Start(std::chrono::milliseconds timeout) {
  if (dir_.empty()) return false;
  if (running()) {
    error_ = "already running";
    return false;
  }
  const bool first = port_ == 0;
  for (int attempt = 0;; ++attempt) {
    if (first) port_ = PickFreePort();
    if (port_ == 0) {
      error_ = "could not find a free port";
      return false;
    }
    const std::string listen = "127.0.0.1:" + std::to_string(port_);
    // "/proc/self/exe" in the child is the image it was forked from, so restarts
    // keep running the same binary even if a rebuild replaced the file meanwhile.
    std::string bin = binary_.empty() ? "/proc/self/exe" : binary_;
    std::vector<std::string> args = {bin, "serve", "--listen", listen, "--data-dir", dir_};
    for (auto& f : client::HarnessServerFlags()) args.push_back(f);
    for (const auto& s : extra_sets_) {
      args.push_back("--set");
      args.push_back(s);
    }
    const std::string log = log_path();
    const size_t offset = FileSize(log);
    pid_t pid = client::LaunchLogged(args, log, &error_);
    if (pid < 0) return false;
    pid_ = pid;
    ++starts_;

    const std::string want_addr = "addr=" + listen;
    auto deadline = SteadyClock::now() + timeout;
    bool exited = false;
    while (SteadyClock::now() < deadline) {
      std::string text = ReadFrom(log, offset);
      std::istringstream lines(text);
      for (std::string line; std::getline(lines, line);) {
        if (line.find("event=listening") != std::string::npos &&
            line.find(want_addr) != std::string::npos) {
          error_.clear();
          return true;
        }
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exited = true;
        error_ = "server exited during startup (" + DescribeStatus(status) + "); log tail:\n" +
                 LogTail();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!exited) {
      error_ = "no `event=listening " + want_addr + "` log line within " +
               std::to_string(timeout.count()) + " ms; log tail:\n" + LogTail();
      Kill9();
      return false;
    }
    // Only the very first start may move to another port (someone took ours).
    if (!first || attempt >= 2) return false;
  }
}

void SpawnedServer::Kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

int SpawnedServer::Stop(std::chrono::milliseconds timeout) {
  if (!running()) return -1;
  ::kill(pid_, SIGTERM);
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    }
    if (SteadyClock::now() >= deadline) {
      error_ = "server ignored SIGTERM for " + std::to_string(timeout.count()) + " ms; killed";
      Kill9();
      return -SIGKILL;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool SpawnedServer::CheckAlive() {
  if (!running()) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) != pid_) return true;
  pid_ = -1;
  error_ = "server died (" + DescribeStatus(status) + ")";
  return false;
}

std::string SpawnedServer::LogTail(size_t lines) const {
  std::istringstream in(ReadFrom(log_path(), 0));
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(std::move(line));
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += "  ";
    out += all[i];
    out += '\n';
  }
  return out;
}

}  // namespace sb::check
