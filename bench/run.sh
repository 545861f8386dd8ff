#!/usr/bin/env bash
# The body of `./dev bench`: runs Switchboard's standard benchmark set against a
# freshly started local server and prints the figures. It measures; it never fails a
# build on a number. See bench/README.md for what each scenario means.
#
#   bench/run.sh [--quick|--long] [--fsync always|none] [--only LIST] [--threads T] [--rate R]
#
#   --quick        smoke run: ~3 s per scenario and smaller populations
#   --long         groups, mixed, storm, queries and sweep longer and larger (30 s
#                  windows, 10 s per sweep rate, more clients); the rest as usual
#   --fsync MODE   the server's store.fsync (default always: acks mean on disk)
#   --only LIST    comma-separated subset of: latency,throughput,senders,openloop,floor,
#                  idle,groups,mixed,storm,queries,sweep,store; and soak, which runs only
#                  when named: open loop at SOAK_RATE msg/s (default 10000) for SOAK_S
#                  seconds (default 300), a line every 10 s (latency, server CPU and
#                  RSS, search backlog): what a sustained load does over minutes
#   --threads T    loadgen client threads (default 1, so the server keeps most of the CPU)
#   --rate R       open-loop total rate, msg/s (default 20000; 4000 with --quick)
#   --rates LIST   the sweep's offered rates, msg/s, comma-separated
#   --set KEY=VAL  a server setting for every scenario (repeatable), e.g.
#                  --set server.shards=1 (one event loop: on two cores shared with the
#                  generator the 35k floor's p99 is lower with one, docs/performance.md)
#   --fuzz         also the long fuzz run: fuzz/run.sh --seconds 300 (about 20 min)
#   --ejabberd     instead, the side-by-side run with ejabberd: the other flags go to
#                  bench/ejabberd/compare.sh (see its --help)
#
# Environment overrides for --long: GRP_RATE=R (group scenario total msg/s), STORM_N=N
# (storm clients; one process holds at most RLIMIT_NOFILE sockets), STORM_JITTER_MS=J
# (each storm client reconnects after a random delay below J ms). For every scenario,
# SOURCE_ADDRS=127.0.0.2,127.0.0.3 spreads the generator's connections over local
# addresses (past ~28k connections, one source address runs out of ports).
#
# Expects build/switchboard and build/bench/loadgen (./dev bench builds them first);
# the environment variables SERVER, LOADGEN and STORE_BENCH override those paths.
# Writes bench/results/<timestamp>-<scenario>.json (loadgen's figures, parameters and
# the machine's description) and keeps server logs in bench/results/<timestamp>-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

# --ejabberd hands the whole run, and every other flag, to the comparison script.
for arg in "$@"; do
  if [[ "$arg" == --ejabberd ]]; then
    rest=()
    for a in "$@"; do [[ "$a" == --ejabberd ]] || rest+=("$a"); done
    exec bench/ejabberd/compare.sh "${rest[@]}"
  fi
done

BUILD_DIR=${BUILD_DIR:-build}
# Each binary can be overridden, e.g. to compare two server builds with one loadgen.
SERVER=${SERVER:-$BUILD_DIR/switchboard}
LOADGEN=${LOADGEN:-$BUILD_DIR/bench/loadgen}
FLOOR_RELAY=${FLOOR_RELAY:-$BUILD_DIR/bench/floor_relay}
STORE_BENCH=${STORE_BENCH:-$BUILD_DIR/bench/store_bench}
RESULTS=bench/results

QUICK=0
FSYNC=always
ONLY=""
THREADS=1
RATE_OVERRIDE=""
RATES_OVERRIDE=""
LONG=0
FUZZ=0
SERVER_SETS=()
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --long) LONG=1 ;;
    --rates) RATES_OVERRIDE=${2:?--rates needs a list of msg/s}; shift ;;
    --fsync) FSYNC=${2:?--fsync needs always or none}; shift ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --threads) THREADS=${2:?--threads needs a number}; shift ;;
    --rate) RATE_OVERRIDE=${2:?--rate needs msg/s}; shift ;;
    --fuzz) FUZZ=1 ;;
    --set) SERVER_SETS+=(--set "${2:?--set needs KEY=VALUE}"); shift ;;
    -h|--help) sed -n '2,30p' bench/run.sh | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$FSYNC" == always || "$FSYNC" == none ]] || { echo "bench: --fsync must be always or none" >&2; exit 2; }
((QUICK && LONG)) && { echo "bench: --quick and --long exclude each other" >&2; exit 2; }

for bin in "$SERVER" "$LOADGEN"; do
  [[ -x "$bin" ]] || { echo "bench: $bin not found; run ./dev bench (it builds first)" >&2; exit 2; }
done

# Scenario sizes. --quick keeps every shape but shrinks time and populations, keeping
# the open-loop per-sender rate (20 msg/s) the same. Idle connections are 5 devices per
# user: each is its own login (an argon2 hash on the server), which dominates setup.
if ((QUICK)); then
  DUR_SHORT=3; DUR_LONG=3; WARMUP=1; PAIRS=200; RATE=4000; IDLE_CONNS=1000; IDLE_USERS=200; IDLE_HOLD=3
else
  DUR_SHORT=10; DUR_LONG=15; WARMUP=2; PAIRS=1000; RATE=20000; IDLE_CONNS=5000; IDLE_USERS=1000; IDLE_HOLD=5
fi

[[ -n "$RATE_OVERRIDE" ]] && RATE=$RATE_OVERRIDE
# The relay runs at the issue's floor (35,000 msg/s) unless a rate is given.
if ((QUICK)); then FLOOR_RATE=$RATE; else FLOOR_RATE=${RATE_OVERRIDE:-35000}; fi

# The scenarios of issue #7 are brief by default (a few seconds each, so the standard
# set stays a few minutes) and longer with --long. Groups: G groups of M members (the
# server's cap is 1,000), S senders each, open loop at a total rate; every message goes
# to M-1 members. Mixed: 1:1 pairs at MIX_RATE, alone then with a group flood.
if ((QUICK)); then
  X_DUR=3; X_WARMUP=1
  GRP_G=2; GRP_M=200; GRP_S=2; GRP_RATE=40
  MIX_PAIRS=100; MIX_RATE=1000; MIX_G=2; MIX_M=200; MIX_S=2; MIX_GRATE=100
  STORM_N=500; STORM_K=10
  Q_PAIRS=20; Q_PREP=100; Q_CLIENTS=8
  SW_PAIRS=200; SW_RATES=1000,2000,4000,8000; SW_DUR=2
elif ((LONG)); then
  X_DUR=30; X_WARMUP=3
  GRP_G=5; GRP_M=1000; GRP_S=5; GRP_RATE=${GRP_RATE:-50}
  MIX_PAIRS=1000; MIX_RATE=5000; MIX_G=2; MIX_M=1000; MIX_S=5; MIX_GRATE=60
  STORM_N=${STORM_N:-5000}; STORM_K=20
  Q_PAIRS=200; Q_PREP=500; Q_CLIENTS=32
  SW_PAIRS=1000; SW_RATES=1000,2000,5000,10000,15000,20000,25000,30000,40000,50000; SW_DUR=10
else
  X_DUR=5; X_WARMUP=2
  GRP_G=2; GRP_M=1000; GRP_S=5; GRP_RATE=20
  MIX_PAIRS=500; MIX_RATE=2000; MIX_G=2; MIX_M=1000; MIX_S=5; MIX_GRATE=40
  STORM_N=2000; STORM_K=20
  Q_PAIRS=50; Q_PREP=200; Q_CLIENTS=16
  SW_PAIRS=1000; SW_RATES=2000,5000,10000,15000,20000,30000,40000; SW_DUR=4
fi
[[ -n "$RATES_OVERRIDE" ]] && SW_RATES=$RATES_OVERRIDE
if ((QUICK)); then
  SOAK_S=${SOAK_S:-20}; SOAK_RATE=${SOAK_RATE:-2000}; SOAK_EVERY=5
else
  SOAK_S=${SOAK_S:-300}; SOAK_RATE=${SOAK_RATE:-10000}; SOAK_EVERY=10
fi

want() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }
named() { [[ ",$ONLY," == *",$1,"* ]]; }  # scenarios left out of the standard set

# Thousands of sockets on both sides: lift the soft open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

TS=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS"
LOGS=$RESULTS/$TS-logs
mkdir -p "$LOGS"
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then COMMIT+="-dirty"; fi

json_escape() {
  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' -e 's/\r//g' | awk 'BEGIN { ORS = "" } { if (NR > 1) print "\\n"; print }'
}

CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//' || true)
MEM_KIB=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
KERNEL=$(uname -srm)
NPROC=$(nproc)
MACHINE_JSON=$(printf '{"nproc":%s,"cpu_model":"%s","mem_total_kib":%s,"kernel":"%s"}' \
  "$NPROC" "$(printf '%s' "$CPU_MODEL" | json_escape)" "$MEM_KIB" "$(printf '%s' "$KERNEL" | json_escape)")

echo "== Switchboard benchmark $TS (commit $COMMIT, fsync=$FSYNC, quick=$QUICK, loadgen threads=$THREADS)"
echo "== machine: $NPROC cpus, $CPU_MODEL, $((MEM_KIB / 1024)) MiB, $KERNEL"
echo "== load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on this machine skews the figures)"
SERVER_SETS_TAG=""
for ((i = 1; i < ${#SERVER_SETS[@]}; i += 2)); do SERVER_SETS_TAG+="${SERVER_SETS_TAG:+ }${SERVER_SETS[i]}"; done
[[ -n "$SERVER_SETS_TAG" ]] && echo "== server settings beyond the defaults: $SERVER_SETS_TAG"

SERVER_PID=""
SERVER_LOG=""
DATA_DIR=""
PORT=""
SUMMARY=()
PROBLEMS=()

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  local pid=$SERVER_PID status=0 i
  SERVER_PID=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # The server drains in-flight commits on SIGTERM (server.drain_timeout_ms, 10 s).
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      PROBLEMS+=("server pid $pid ignored SIGTERM for 15 s; killed (log: $SERVER_LOG)")
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || status=$?
  if ((status != 0)); then
    PROBLEMS+=("server exited with status $status after SIGTERM (log: $SERVER_LOG)")
  fi
  [[ -n "$DATA_DIR" ]] && rm -rf "$DATA_DIR"
  DATA_DIR=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# start_server NAME: a fresh server on a free port with an empty data dir.
start_server() {
  local name=$1 i
  stop_server
  DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sb-bench-data.XXXXXX")
  SERVER_LOG=$LOGS/server-$name.log
  # Cheap password hashing so setup can register thousands of users quickly (64 KiB:
  # about 10x faster setup than 8 MiB; the groups, mixed, storm and sweep scenarios
  # register 2,000-3,000 users each), and no per-connection send rate limit or
  # connection caps: the benchmark measures the server, not its limiters.
  "$SERVER" serve --listen 127.0.0.1:0 --data-dir "$DATA_DIR" \
    --set store.fsync="$FSYNC" \
    --set auth.password_ops=1 --set auth.password_mem_kib=64 \
    --set limits.send_rate_per_s=1e9 --set limits.send_burst=1e9 \
    --set server.connects_per_ip_per_s=0 --set limits.login_attempts_per_ip_per_min=1e9 \
    --set server.max_connections_per_user=100000 "${SERVER_SETS[@]}" \
    2>"$SERVER_LOG" &
  SERVER_PID=$!
  PORT=""
  for ((i = 0; i < 300; i++)); do
    PORT=$(grep -m1 -o 'event=listening addr=[^ ]*' "$SERVER_LOG" 2>/dev/null | sed 's/.*://' || true)
    [[ -n "$PORT" ]] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [[ -z "$PORT" ]]; then
    echo "bench: server did not start for $name; last log lines:" >&2
    tail -n 20 "$SERVER_LOG" >&2 || true
    PROBLEMS+=("server did not start for $name (log: $SERVER_LOG)")
    stop_server
    return 1
  fi
  echo "-- server pid $SERVER_PID on 127.0.0.1:$PORT (data $DATA_DIR, log $SERVER_LOG)"
}

# start_relay NAME: bench/floor_relay (the same 1:1 traffic relayed with nothing
# stored, checked or indexed) in place of the server: what the machine and the
# generator leave to a real server (docs/performance.md, "The floor without a server").
start_relay() {
  local name=$1 i
  stop_server
  SERVER_LOG=$LOGS/server-$name.log
  "$FLOOR_RELAY" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  PORT=""
  for ((i = 0; i < 100; i++)); do
    PORT=$(awk '/^listening/ { print $2; exit }' "$SERVER_LOG" 2>/dev/null || true)
    [[ -n "$PORT" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$PORT" ]]; then
    PROBLEMS+=("floor_relay did not start for $name (log: $SERVER_LOG)")
    stop_server
    return 1
  fi
  echo "-- floor_relay pid $SERVER_PID on 127.0.0.1:$PORT (log $SERVER_LOG)"
}

# loadgen NAME ARGS...: one loadgen run against the current server.
loadgen() {
  local name=$1
  local json=$RESULTS/$TS-$name.json rc=0
  shift
  echo
  echo "== $name: loadgen $*"
  "$LOADGEN" --url "ws://127.0.0.1:$PORT/v1/ws" --server-pid "$SERVER_PID" --threads "$THREADS" \
    --json "$json" --tag bench="$name" --tag fsync="$FSYNC" --tag commit="$COMMIT" --tag quick="$QUICK" \
    ${SERVER_SETS_TAG:+--tag server_sets="$SERVER_SETS_TAG"} \
    ${SOURCE_ADDRS:+--source-addrs "$SOURCE_ADDRS"} "$@" | tee "$LOGS/$name.out" || rc=$?
  if ((rc != 0)); then
    PROBLEMS+=("loadgen $name exited with status $rc")
    SUMMARY+=("$name: FAILED (status $rc)")
    return 0
  fi
  local line
  line=$(grep -m1 '^RESULT ' "$LOGS/$name.out" | sed 's/^RESULT //' || true)
  SUMMARY+=("$name: ${line:-no RESULT line}")
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    PROBLEMS+=("server died during $name (log: $SERVER_LOG)")
    SERVER_PID=""
  fi
}

started=$(date +%s)

if want latency || want throughput; then
  if start_server single; then
    want latency && loadgen latency --scenario senders --pairs 1 --window 1 --duration "$DUR_SHORT" --warmup "$WARMUP"
    want throughput && loadgen throughput --scenario senders --pairs 1 --window 64 --duration "$DUR_SHORT" --warmup "$WARMUP"
    stop_server
  fi
fi

if want senders; then
  if start_server senders; then
    loadgen senders --scenario senders --pairs "$PAIRS" --window 1 --duration "$DUR_LONG" --warmup "$WARMUP"
    stop_server
  fi
fi

if want openloop; then
  if start_server openloop; then
    loadgen openloop --scenario senders --pairs "$PAIRS" --rate "$RATE" --duration "$DUR_LONG" --warmup "$WARMUP"
    stop_server
  fi
fi

# The open-loop run again, against a relay that does none of a server's work.
if want floor; then
  if [[ ! -x "$FLOOR_RELAY" ]]; then
    PROBLEMS+=("floor: $FLOOR_RELAY not found (./dev bench builds it)")
  elif start_relay floor; then
    loadgen floor --scenario senders --pairs "$PAIRS" --rate "$FLOOR_RATE" --duration "$DUR_LONG" --warmup "$WARMUP"
    stop_server
  fi
fi

if want idle; then
  if start_server idle; then
    loadgen idle --scenario idle --connections "$IDLE_CONNS" --users "$IDLE_USERS" --duration "$IDLE_HOLD"
    stop_server
  fi
fi

if want groups; then
  if start_server groups; then
    loadgen groups --scenario groups --groups "$GRP_G" --members "$GRP_M" --group-senders "$GRP_S" \
      --group-rate "$GRP_RATE" --duration "$X_DUR" --warmup "$X_WARMUP"
    stop_server
  fi
fi

# The bulkhead benchmark of issue #4: two phases on one server and one set of
# connections (1:1 alone, then 1:1 under the group flood), both in one loadgen run.
if want mixed; then
  if start_server mixed; then
    loadgen mixed --scenario mixed --pairs "$MIX_PAIRS" --rate "$MIX_RATE" --groups "$MIX_G" --members "$MIX_M" \
      --group-senders "$MIX_S" --group-rate "$MIX_GRATE" --duration "$X_DUR" --warmup "$X_WARMUP"
    stop_server
  fi
fi

if want storm; then
  # The heavy case: the clients resume without cursors and nothing was acknowledged,
  # so every message goes again to both members. Then the same drop for clients that
  # kept their cursors (docs/protocol.md's client rules): nothing is replayed, what is
  # left is the reconnect and the resume themselves.
  for cursors in off on; do
    name=storm
    [[ $cursors == on ]] && name=storm-cur
    if start_server "$name"; then
      loadgen "$name" --scenario storm --connections "$STORM_N" --storm-messages "$STORM_K" --storm-cursors "$cursors" \
        ${STORM_JITTER_MS:+--storm-jitter-ms "$STORM_JITTER_MS"}
      stop_server
    fi
  done
fi

if want queries; then
  if start_server queries; then
    loadgen queries --scenario queries --pairs "$Q_PAIRS" --prep-messages "$Q_PREP" --http-clients "$Q_CLIENTS" \
      --duration "$X_DUR" --warmup "$X_WARMUP"
    stop_server
  fi
fi

if want sweep; then
  if start_server sweep; then
    loadgen sweep --scenario sweep --pairs "$SW_PAIRS" --rates "$SW_RATES" --duration "$SW_DUR" --warmup 1 \
      --svg "$RESULTS/$TS-sweep.svg"
    stop_server
  fi
fi

if named soak; then
  if start_server soak; then
    loadgen soak --scenario senders --pairs "$PAIRS" --rate "$SOAK_RATE" --duration "$SOAK_S" --warmup "$WARMUP" \
      --report-every "$SOAK_EVERY"
    stop_server
  fi
fi

if want store; then
  if [[ -x "$STORE_BENCH" ]]; then
    echo
    # Its defaults take about a minute; --quick asks for a tenth of the default data.
    STORE_ARGS=()
    ((QUICK)) && STORE_ARGS=(--messages 50000)
    echo "== store_bench: $STORE_BENCH ${STORE_ARGS[*]:-(its defaults)}"
    rc=0
    "$STORE_BENCH" "${STORE_ARGS[@]}" 2>&1 | tee "$LOGS/store_bench.out" || rc=$?
    {
      printf '{"tool":"store_bench","scenario":"store_bench","started_at":"%s","exit_status":%d,' "$TS" "$rc"
      printf '"tags":{"commit":"%s","quick":"%s"},"machine":%s,' "$COMMIT" "$QUICK" "$MACHINE_JSON"
      printf '"output":"%s"}\n' "$(json_escape <"$LOGS/store_bench.out")"
    } >"$RESULTS/$TS-store_bench.json"
    if ((rc != 0)); then
      PROBLEMS+=("store_bench exited with status $rc")
      SUMMARY+=("store_bench: FAILED (status $rc)")
    else
      SUMMARY+=("store_bench: see $RESULTS/$TS-store_bench.json")
    fi
  else
    SUMMARY+=("store_bench: skipped ($STORE_BENCH not built)")
  fi
fi

if ((FUZZ)); then
  echo
  echo "== fuzz: fuzz/run.sh --seconds 300 (each target, from its seed corpus)"
  if fuzz/run.sh --seconds 300 2>&1 | tee "$LOGS/fuzz.out"; then
    SUMMARY+=("fuzz: every target 300 s without a crash (log: $LOGS/fuzz.out)")
  else
    PROBLEMS+=("fuzz run found a crash or failed (log: $LOGS/fuzz.out)")
    SUMMARY+=("fuzz: FAILED")
  fi
fi

# One table row per loadgen RESULT line ("name: key=value ..."); other lines as they are.
summary_table() {
  awk '
    function field(k,   i, kv) { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] } return "-" }
    BEGIN { hdr = 0 }
    $2 == "scenario=senders" {
      if (!hdr) {
        printf "  %-11s %7s %9s %9s %9s | %9s %9s %9s %9s | %9s %9s | %6s %7s %6s\n", "scenario", "senders", "load", "acked/s", "deliv/s", "ack p50", "p99", "p99.9", "max", "dlv p50", "p99", "failed", "unacked", "closed"
        hdr = 1
      }
      load = field("window") != "-" ? "W=" field("window") : "R=" field("rate")
      printf "  %-11s %7s %9s %9s %9s | %7sms %7sms %7sms %7sms | %7sms %7sms | %6s %7s %6s\n", substr($1, 1, length($1) - 1), field("senders"), load, field("acked_per_s"), field("delivered_per_s"), field("ack_p50_ms"), field("ack_p99_ms"), field("ack_p999_ms"), field("ack_max_ms"), field("deliv_p50_ms"), field("deliv_p99_ms"), field("failed"), field("unacked"), field("closed")
      next
    }
    $2 == "scenario=idle" {
      printf "  %-11s connections %s, %s conn/s, %s bytes/connection, %s closed\n", substr($1, 1, length($1) - 1), field("connections"), field("connect_per_s"), field("bytes_per_conn"), field("closed")
      next
    }
    $2 == "scenario=groups" {
      printf "  %-11s %s x %s members, %s senders at %s msg/s: %s deliveries/s, %s acked/s; delivery p50 %s p99 %s p99.9 %s ms; ack p50 %s p99 %s p99.9 %s ms; failed %s, unacked %s, closed %s\n", substr($1, 1, length($1) - 1), field("groups"), field("members"), field("senders"), field("rate"), field("delivered_per_s"), field("acked_per_s"), field("deliv_p50_ms"), field("deliv_p99_ms"), field("deliv_p999_ms"), field("ack_p50_ms"), field("ack_p99_ms"), field("ack_p999_ms"), field("failed"), field("unacked"), field("closed")
      next
    }
    $2 == "scenario=mixed" {
      printf "  %-11s 1:1 (%s pairs at %s msg/s) delivery p99: alone %s ms | with the group flood %s ms  (p50 %s | %s, p99.9 %s | %s; ack p99 %s | %s)\n", substr($1, 1, length($1) - 1), field("pairs"), field("rate"), field("alone_deliv_p99_ms"), field("flood_deliv_p99_ms"), field("alone_deliv_p50_ms"), field("flood_deliv_p50_ms"), field("alone_deliv_p999_ms"), field("flood_deliv_p999_ms"), field("alone_ack_p99_ms"), field("flood_ack_p99_ms")
      printf "  %-11s flood: %s x %s members at %s msg/s: %s deliveries/s, %s acked/s, delivery p99 %s ms, %s sends refused; %s connections closed\n", "", field("groups"), field("members"), field("group_rate"), field("group_delivered_per_s"), field("group_acked_per_s"), field("group_deliv_p99_ms"), field("group_failed"), field("closed")
      next
    }
    $2 == "scenario=storm" {
      printf "  %-11s %s clients dropped and back: resume_done 50%% %s ms, 99%% %s ms, 100%% %s ms; %s connects/s, %s replayed, %s failed, %s error frames\n", substr($1, 1, length($1) - 1), field("clients"), field("t50_ms"), field("t99_ms"), field("t100_ms"), field("connect_per_s"), field("replayed"), field("failed"), field("error_frames")
      next
    }
    $2 == "scenario=queries" {
      printf "  %-11s %s HTTP clients: history %s/s (p50 %s, p99 %s ms, %s failed); search %s/s (p50 %s, p99 %s ms, %s failed)\n", substr($1, 1, length($1) - 1), field("clients"), field("history_per_s"), field("history_p50_ms"), field("history_p99_ms"), field("history_failed"), field("search_per_s"), field("search_p50_ms"), field("search_p99_ms"), field("search_failed")
      next
    }
    $2 == "scenario=sweep" {
      printf "  %-11s kept up to %s msg/s (delivery p99 %s ms there); delivery p99 ms per offered rate: %s; chart %s\n", substr($1, 1, length($1) - 1), field("max_kept_up_rate"), field("p99_at_max_ms"), field("rates"), field("svg")
      next
    }
    { print "  " $0 }'
}

echo
echo "== summary ($(($(date +%s) - started)) s; every figure in $RESULTS/$TS-*.json; latencies in ms)"
printf '%s\n' "${SUMMARY[@]}" | summary_table
if ((${#PROBLEMS[@]})); then
  echo "== problems"
  for p in "${PROBLEMS[@]}"; do echo "  $p"; done
fi
