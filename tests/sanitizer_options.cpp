// Default runtime options of the sanitizer builds (-DSB_SANITIZE=address|thread;
// `./dev test` runs both). CMakeLists.txt links this file into switchboard, unit_tests
// and integration_tests of those builds only, so every process of a test run, the
// servers the integration tests start included, fails on its first report, whether it
// was started by ctest or by hand. ASAN_OPTIONS / UBSAN_OPTIONS / TSAN_OPTIONS in the
// environment are applied on top of these (e.g. TSAN_OPTIONS=halt_on_error=0 to see
// every report of a run).

// The runtimes look these up by name; they must be visible and not optimized away.
#define SB_SANITIZER_HOOK extern "C" __attribute__((visibility("default"), used)) const char*

#if defined(__SANITIZE_ADDRESS__)
// Leaks fail the process at exit (LeakSanitizer works in CI: plain root, no ptrace
// restriction). Globals initialized from other translation units are checked too.
SB_SANITIZER_HOOK __asan_default_options() {
  return "halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:"
         "detect_stack_use_after_return=1";
}
// -fno-sanitize-recover=all already makes UB abort; this adds the stack to the report.
SB_SANITIZER_HOOK __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }
#endif

#if defined(__SANITIZE_THREAD__)
#ifndef SB_TSAN_SUPPRESSIONS
#error "SB_TSAN_SUPPRESSIONS (the path of tests/tsan.supp) is set by CMakeLists.txt"
#endif
// The first unsuppressed report kills the process (exit 66); tests/tsan.supp lists
// the only reports we accept (inside the uninstrumented librocksdb) and why.
SB_SANITIZER_HOOK __tsan_default_options() {
  return "halt_on_error=1:exitcode=66:second_deadlock_stack=1:suppressions=" SB_TSAN_SUPPRESSIONS;
}

#include <string>
// The std::string member RocksDB's write groups copy their batches with, instantiated
// here: instrumented, and exported to librocksdb.so by the linker (which binds its
// calls to it), so a report of such a copy carries the RocksDB function that made it,
// which tests/tsan.supp names. libstdc++ leaves std::string to implicit instantiation
// in C++20, so whether some other translation unit emits an out-of-line copy depends
// on what gets inlined; without one, librocksdb.so calls libstdc++.so's uninstrumented
// copy, the RocksDB frame is lost and no suppression matches (seen in session 11:
// StoreTest.ConcurrentAppendsToDistinctConversations, once delivery.cpp stopped
// building a key with operator+, its one out-of-line copy).
template std::string& std::string::_M_append(const char*, std::string::size_type);
#endif
