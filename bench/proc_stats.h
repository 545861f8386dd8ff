// What a load generator reads about the machine and about the server process it loads:
// VmRSS, CPU time, per-thread CPU and run-queue wait (/proc/PID/task/*/schedstat), and a
// description of the machine for the result files. Linux only; every reader returns -1
// or an empty result when /proc does not have the answer, and never throws.
//
// bench/loadgen.cpp and bench/xmpp_loadgen.cpp both use these (same definitions, same
// JSON meaning), so the figures of the two tools compare.
#pragma once

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace sb::bench {

inline std::string ReadFileStr(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// VmRSS of a process in KiB, or -1 when it cannot be read.
inline int64_t ReadRssKib(int pid) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// utime + stime of a process in seconds, or -1.
inline double ReadCpuSec(int pid) {
  if (pid <= 0) return -1;
  std::string s = ReadFileStr("/proc/" + std::to_string(pid) + "/stat");
  // The command name is parenthesised and may hold spaces: count fields after it.
  auto rp = s.rfind(')');
  if (rp == std::string::npos || rp + 2 > s.size()) return -1;
  std::istringstream in(s.substr(rp + 2));
  std::string field;
  double ut = 0, st = 0;
  // Fields 3.. follow ')'; utime is field 14, stime 15 (1-based, proc(5)).
  for (int i = 3; i <= 15 && (in >> field); ++i) {
    if (i == 14) ut = std::strtod(field.c_str(), nullptr);
    if (i == 15) st = std::strtod(field.c_str(), nullptr);
  }
  return (ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Per-thread time of a process, keyed "name/tid": seconds on a CPU and seconds spent
// runnable but waiting for one (schedstat). A server whose total CPU is well below the
// core count may have one saturated thread (a sequencer, the commit thread), or may be
// starved by other work on a shared machine; these two figures tell which.
struct ThreadTimes {
  double cpu_s = 0;
  double wait_s = 0;
};

inline std::map<std::string, ThreadTimes> ReadThreadTimes(int pid) {
  std::map<std::string, ThreadTimes> out;
  if (pid <= 0) return out;
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/task", ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::string tid = it->path().filename().string();
    std::string st = ReadFileStr(it->path().string() + "/stat");
    auto lp = st.find('('), rp = st.rfind(')');
    if (lp == std::string::npos || rp == std::string::npos || rp < lp) continue;
    ThreadTimes t;
    std::istringstream ss(ReadFileStr(it->path().string() + "/schedstat"));
    double run_ns = -1, wait_ns = -1;
    if (ss >> run_ns >> wait_ns) {
      t.cpu_s = run_ns / 1e9;
      t.wait_s = wait_ns / 1e9;
    } else if (rp + 2 <= st.size()) {
      std::istringstream in(st.substr(rp + 2));
      std::string field;
      double ut = 0, sys = 0;
      for (int i = 3; i <= 15 && (in >> field); ++i) {
        if (i == 14) ut = std::strtod(field.c_str(), nullptr);
        if (i == 15) sys = std::strtod(field.c_str(), nullptr);
      }
      t.cpu_s = (ut + sys) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
    out[st.substr(lp + 1, rp - lp - 1) + "/" + tid] = t;
  }
  return out;
}

struct ThreadPct {
  std::string name;
  double cpu = 0;   // percent of one core
  double wait = 0;  // percent of the interval spent runnable but not running
};

// Per-thread percentages between two samples, busiest first; idle threads left out.
inline std::vector<ThreadPct> ThreadPcts(const std::map<std::string, ThreadTimes>& a,
                                         const std::map<std::string, ThreadTimes>& b, double seconds) {
  std::vector<ThreadPct> v;
  for (const auto& [k, e] : b) {
    auto it = a.find(k);
    ThreadTimes s = it == a.end() ? ThreadTimes{} : it->second;
    ThreadPct p{k, 100.0 * (e.cpu_s - s.cpu_s) / seconds, 100.0 * (e.wait_s - s.wait_s) / seconds};
    if (p.cpu >= 0.5 || p.wait >= 0.5) v.push_back(p);
  }
  std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.cpu > y.cpu; });
  return v;
}

inline double SumWait(const std::vector<ThreadPct>& v) {
  double w = 0;
  for (const auto& t : v) w += t.wait;
  return w;
}

inline double SelfCpuSec() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

struct Machine {
  long nproc = 0;
  std::string cpu_model;
  int64_t mem_total_kib = 0;
  std::string kernel;
};

inline Machine DescribeMachine() {
  Machine m;
  m.nproc = sysconf(_SC_NPROCESSORS_ONLN);
  std::ifstream ci("/proc/cpuinfo");
  std::string line;
  while (std::getline(ci, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto c = line.find(':');
      if (c != std::string::npos) {
        auto v = line.find_first_not_of(" \t", c + 1);
        if (v != std::string::npos) m.cpu_model = line.substr(v);
      }
      break;
    }
  }
  std::ifstream mi("/proc/meminfo");
  while (std::getline(mi, line)) {
    if (line.rfind("MemTotal:", 0) == 0) {
      m.mem_total_kib = std::strtoll(line.c_str() + 9, nullptr, 10);
      break;
    }
  }
  utsname u{};
  if (uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
  return m;
}

inline std::string IsoNow() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

inline void RaiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

inline int64_t FdLimit() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  return static_cast<int64_t>(rl.rlim_cur);
}

}  // namespace sb::bench
