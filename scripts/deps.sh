#!/usr/bin/env bash
# Installs every Debian package Switchboard needs to build, run and test.
# Idempotent: packages already present are skipped, so a warm machine pays nothing.
set -euo pipefail

PKGS=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config make
  # fuzzing (fuzz/run.sh, the fuzz_smoke test): clang 14 and its libFuzzer/ASan runtimes
  clang libclang-rt-14-dev
  # libraries (headers-only Boost 1.81 for Asio/Beast; the rest are -dev packages)
  libboost1.81-dev librocksdb-dev libsimdjson-dev libsodium-dev libssl-dev
  libtomlplusplus-dev libsqlite3-dev libjemalloc-dev
  # tests
  libgtest-dev libgmock-dev
  # process inspection used by tests and benchmarks
  procps
  # a real reverse proxy in front of the server (tests/integration/tls_test.cpp)
  nginx-light
)
if [[ "${SB_WITH_BENCH:-0}" == 1 ]]; then
  PKGS+=(libbenchmark-dev)
fi
# The browser test (tests/browser): Debian's Chromium, and Node.js with npm unless the
# machine already has a node (then its npm is used).
if [[ "${SB_WITH_BROWSER:-0}" == 1 ]]; then
  PKGS+=(chromium)
  command -v node >/dev/null && command -v npm >/dev/null || PKGS+=(nodejs npm)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # Packages with a service (nginx) must not start it on port 80 as they install: a
  # policy-rc.d that denies every start, for the duration of the install only.
  policy=""
  if [[ $(id -u) -eq 0 && ! -e /usr/sbin/policy-rc.d ]]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ -n "$policy" ]]; then rm -f "$policy"; trap - EXIT; fi
fi

# playwright-core for the browser test, at the version package-lock.json pins (it
# drives the Chromium above and downloads no browser of its own).
if [[ "${SB_WITH_BROWSER:-0}" == 1 ]]; then
  browser_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
  stamp="$browser_dir/node_modules/.package-lock.json"
  if [[ ! -f "$stamp" || "$browser_dir/package-lock.json" -nt "$stamp" ]]; then
    echo "deps: npm ci in tests/browser" >&2
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
