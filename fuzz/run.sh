#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, in build-fuzz) and runs each one
# for N seconds from its seed corpus. Fails if any target crashes, hangs, leaks or
# breaks an invariant. See fuzz/README.md.
#
#   fuzz/run.sh [--seconds N] [--target T] [--no-build]
#
#   --seconds N   time per target (default 10: the smoke run of the test suite)
#   --target T    only this target (fuzz_frame, fuzz_ws, fuzz_jwt, fuzz_http, fuzz_dispatch)
#   --no-build    use the binaries already in $FUZZ_BUILD_DIR
#
# The seed corpus is copied to a temp dir, so the run never writes into the repo;
# with FUZZ_KEEP_CORPUS=1 that dir is kept (and printed) to inspect or minimize.
# Crash inputs are written to $FUZZ_ARTIFACTS (default fuzz-artifacts/ under the
# build dir) and their path is printed: reproduce with `<binary> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=10
ONLY=""
BUILD=1
while (($#)); do
  case "$1" in
    --seconds) SECONDS_PER_TARGET=${2:?--seconds needs a number}; shift ;;
    --target) ONLY=${2:?--target needs a name}; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

TARGETS=(fuzz_frame fuzz_ws fuzz_jwt fuzz_http fuzz_dispatch)
if [[ -n "$ONLY" ]]; then
  [[ " ${TARGETS[*]} " == *" $ONLY "* ]] || { echo "fuzz: unknown target $ONLY" >&2; exit 2; }
  TARGETS=("$ONLY")
fi

FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
ARTIFACTS=${FUZZ_ARTIFACTS:-$FUZZ_BUILD_DIR/fuzz-artifacts}

if ((BUILD)); then
  scripts/deps.sh
  launcher=()
  if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  if [[ ! -f "$FUZZ_BUILD_DIR/build.ninja" ]]; then
    # Its own build dir: clang, the fuzz targets on, and no -Werror (warnings are the
    # g++ build's business; clang's extra ones must not break fuzzing).
    CC=clang CXX=clang++ cmake -S . -B "$FUZZ_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSB_FUZZ=ON -DSB_WERROR=OFF "${launcher[@]}" >/dev/null
  fi
  # Only the fuzzers and what they link (sb_core): not the server or the tests.
  start=$(date +%s)
  cmake --build "$FUZZ_BUILD_DIR" -j"$(nproc)" --target fuzzers
  echo "fuzz: build took $(($(date +%s) - start)) s"
fi

mkdir -p "$ARTIFACTS"
# The targets keep RocksDB stores in temp dirs, and account writes are always fsynced:
# on a RAM disk an fsync costs nothing, which is several times the executions per second.
TMP_BASE=${FUZZ_TMPDIR:-}
if [[ -z "$TMP_BASE" ]]; then
  if [[ -d /dev/shm && -w /dev/shm ]]; then TMP_BASE=/dev/shm; else TMP_BASE=${TMPDIR:-/tmp}; fi
fi
# One root for this run's target temp dirs, removed even if a target crashed (a
# crashed target cannot clean up, and /dev/shm is RAM).
RUN_TMP=$(mktemp -d "$TMP_BASE/sb-fuzz-tmp.XXXXXX")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sb-fuzz.XXXXXX")
cleanup() {
  rm -rf "$RUN_TMP"
  if [[ "${FUZZ_KEEP_CORPUS:-0}" == 1 ]]; then echo "fuzz: corpus kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  bin=$FUZZ_BUILD_DIR/fuzz/$t
  [[ -x "$bin" ]] || { echo "fuzz: $bin not built" >&2; exit 2; }
  mkdir -p "$WORK/$t"
  cp fuzz/corpus/$t/* "$WORK/$t/"
  log=$WORK/$t.log
  echo "== $t: ${SECONDS_PER_TARGET} s from $(ls fuzz/corpus/$t | wc -l) seeds"
  rc=0
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: state the targets
  # keep across inputs must stay bounded. Leak checking stays on (ASan's default).
  TMPDIR=$RUN_TMP "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$ARTIFACTS/$t-" "$WORK/$t" >"$log" 2>&1 || rc=$?
  line=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
  summary+=("$t: $line")
  if ((rc != 0)); then
    failed+=("$t")
    echo "fuzz: $t FAILED (exit $rc); last lines of its log:" >&2
    tail -n 60 "$log" >&2
    grep -h 'Test unit written to' "$log" >&2 || true
  else
    echo "   $line"
  fi
done

echo "== summary"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} failed, $((${#TARGETS[@]} - ${#failed[@]})) passed: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} passed, 0 failed"
