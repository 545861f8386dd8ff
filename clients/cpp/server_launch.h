// Starting a switchboard server process from a test harness or tool (the integration
// tests' ServerProcess and `switchboard check --spawn` share it).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace sb::client {

// Flags for a server that a harness drives hard from 127.0.0.1 with many cheap
// accounts: fast password hashing, info logs, and no per-address, per-login or
// per-user connection limits (those have tests of their own).
std::vector<std::string> HarnessServerFlags();

// fork+exec of `args` (args[0] is the binary) with stdin from /dev/null and stdout and
// stderr appended to `log_path`. The child is killed if the calling process dies, so
// an interrupted run leaves no server behind. Returns the pid, or -1 with *error set.
pid_t LaunchLogged(const std::vector<std::string>& args, const std::string& log_path, std::string* error);

}  // namespace sb::client
