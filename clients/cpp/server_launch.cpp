#include "server_launch.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sb::client {

std::vector<std::string> HarnessServerFlags() {
  return {"--set", "auth.password_ops=1",
          "--set", "auth.password_mem_kib=8192",
          "--set", "log.level=info",
          "--set", "server.connects_per_ip_per_s=0",
          "--set", "limits.login_attempts_per_ip_per_min=1e9",
          "--set", "server.max_connections_per_user=100000",
          // Test machines are often saturated: the search index may pause, but not
          // for longer than a test polls for a result.
          "--set", "search.max_yield_s=1"};
}

pid_t LaunchLogged(const std::vector<std::string>& args, const std::string& log_path, std::string* error) {
  // argv is built before fork: only async-signal-safe calls may run in the child.
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "open " + log_path + ": " + std::strerror(errno);
    return -1;
  }
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    *error = std::string("fork: ") + std::strerror(errno);
    ::close(fd);
    if (devnull >= 0) ::close(devnull);
    return -1;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);  // the parent died before prctl took effect
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(argv[0], argv.data());
    const char msg[] = "server launch: execv failed\n";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(127);
  }
  ::close(fd);
  if (devnull >= 0) ::close(devnull);
  return pid;
}

}  // namespace sb::client
