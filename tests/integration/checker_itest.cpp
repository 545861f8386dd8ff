// `switchboard check` end to end: a small run of the consistency checker against a
// server it spawns, SIGKILLs twice and restarts, with clients dropping their sockets
// at random. The checker itself judges the delivery guarantees (docs/protocol.md,
// "Guarantees"); this test holds it to "no violation" and to its output contract.
//
// The binary is run as a child process (tools/ is not linked into this test binary).
// SB_BINARY overrides the binary as for every integration test; `--set K=V` pairs in
// SB_TEST_SERVER_ARGS reach the spawned server through --server-set.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#ifndef SB_BINARY
#define SB_BINARY "build/switchboard"
#endif

namespace sb::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string Binary() {
  if (const char* env = std::getenv("SB_BINARY"); env && *env) return env;
  return SB_BINARY;
}

struct Outcome {
  int exit_code = -1;  // -signal when killed
  std::string output;  // stdout and stderr interleaved
  bool timed_out = false;
};

// Runs argv, collecting its output; SIGKILLs it past `timeout` so that a hung
// checker fails this test instead of the whole suite's timeout.
Outcome RunProcess(std::vector<std::string> args, std::chrono::seconds timeout) {
  Outcome out;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return out;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      out.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return out;
}

std::vector<std::string> ServerSets() {
  std::vector<std::string> out;
  const char* env = std::getenv("SB_TEST_SERVER_ARGS");
  if (!env) return out;
  std::istringstream words(env);
  for (std::string w; words >> w;) {
    if (w == "--set" && (words >> w)) {
      out.push_back("--server-set");
      out.push_back(w);
    }
  }
  return out;
}

// The verdict line's counts, or empty when the last line is not the verdict.
std::map<std::string, long long> Verdict(const std::string& output) {
  std::map<std::string, long long> counts;
  std::string last;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) last = line;
  static const std::regex kVerdict(
      "^check: sent=(\\d+) acked=(\\d+) stored=(\\d+) lost=(\\d+) duplicated=(\\d+) "
      "out_of_order=(\\d+) gaps=(\\d+) ack_mismatch=(\\d+)$");
  std::smatch m;
  if (!std::regex_match(last, m, kVerdict)) return counts;
  const char* names[] = {"sent", "acked", "stored", "lost", "duplicated", "out_of_order", "gaps", "ack_mismatch"};
  for (size_t i = 0; i < std::size(names); ++i) counts[names[i]] = std::stoll(m[i + 1].str());
  return counts;
}

TEST(CheckerTest, KillsAndDisconnectsLoseNothingAndKeepOrder) {
  const std::string bin = Binary();
  std::vector<std::string> args = {bin,       "check",   "--spawn",           "--server-bin", bin,
                                   "--clients", "6",     "--messages",        "600",          "--kills",
                                   "2",       "--disconnect-rate", "0.5",   "--seed",       "1"};
  for (auto& s : ServerSets()) args.push_back(s);
  const auto start = Clock::now();
  Outcome r = RunProcess(args, std::chrono::seconds(120));
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_FALSE(r.timed_out) << "the checker ran past 120 s:\n" << r.output;

  auto v = Verdict(r.output);
  ASSERT_FALSE(v.empty()) << "the last line is not the verdict line:\n" << r.output;
  EXPECT_EQ(v["sent"], 600) << r.output;
  EXPECT_EQ(v["acked"], 600) << r.output;
  EXPECT_EQ(v["stored"], 600) << r.output;
  for (const char* k : {"lost", "duplicated", "out_of_order", "gaps", "ack_mismatch"})
    EXPECT_EQ(v[k], 0) << k << " must be 0:\n" << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("kill 2/2"), std::string::npos) << "both kills must happen:\n" << r.output;
  EXPECT_LT(took, 60.0) << "the run must stay well under a minute:\n" << r.output;
}

TEST(CheckerTest, BadUsageExitsTwo) {
  const std::string bin = Binary();
  Outcome none = RunProcess({bin, "check"}, std::chrono::seconds(10));
  EXPECT_EQ(none.exit_code, 2) << none.output;
  Outcome kills_without_spawn =
      RunProcess({bin, "check", "--url", "http://127.0.0.1:1", "--kills", "1"}, std::chrono::seconds(10));
  EXPECT_EQ(kills_without_spawn.exit_code, 2) << kills_without_spawn.output;
  Outcome help = RunProcess({bin, "check", "--help"}, std::chrono::seconds(10));
  EXPECT_EQ(help.exit_code, 0) << help.output;
  for (const char* flag : {"--url", "--spawn", "--server-bin", "--clients", "--devices-per-client", "--groups",
                           "--messages", "--disconnect-rate", "--kills", "--seed", "--duration-limit", "--json"})
    EXPECT_NE(help.output.find(flag), std::string::npos) << "--help must explain " << flag;
}

}  // namespace
}  // namespace sb::test
