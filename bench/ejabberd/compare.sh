#!/usr/bin/env bash
# Side by side with ejabberd: the same scenario shapes against Switchboard and against
# Debian's ejabberd (23.01) in one run, on this machine, and a table of both figures
# and their ratio. It measures; nothing here fails on a number. See
# bench/ejabberd/README.md for what is compared and where the shapes differ.
#
#   bench/ejabberd/compare.sh [--quick] [--rates LIST] [--pairs P] [--only LIST]
#                             [--scenarios LIST] [--threads T] [--fsync always|none]
#
#   --quick          3 s per point, 200 pairs, rates 1000,2000,4000, 1,000 idle connections
#   --rates LIST     open-loop total rates in msg/s (default 2000,5000,10000)
#   --pairs P        1:1 pairs for the open-loop runs (default 1000; 200 with --quick)
#   --only LIST      servers, comma-separated: switchboard,noarchive,mam (default all)
#   --scenarios LIST openloop,idle (default both)
#   --threads T      client threads for both load generators (default 1)
#   --fsync MODE     Switchboard's store.fsync (default always)
#
# Order: Switchboard (open loop at each rate, then idle, each on a fresh server), then
# ejabberd without any archive, then ejabberd with mod_mam on SQLite, the same way. Expects built binaries (./dev bench builds them; `./dev bench --ejabberd` runs
# this script): build/switchboard, build/bench/loadgen, build/bench/xmpp_loadgen, or
# SERVER, LOADGEN, XMPP_LOADGEN (or BUILD_DIR) from the environment. Installs ejabberd
# from Debian's packages if it is missing. Writes every run's JSON and one combined
# bench/results/<timestamp>-ejabberd-compare.json; logs in bench/results/<timestamp>-logs/.
# KEEP=1 keeps ejabberd's temporary directories (config, spool, logs, SQLite file).
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD_DIR=${BUILD_DIR:-build}
SERVER=${SERVER:-$BUILD_DIR/switchboard}
LOADGEN=${LOADGEN:-$BUILD_DIR/bench/loadgen}
XMPP_LOADGEN=${XMPP_LOADGEN:-$BUILD_DIR/bench/xmpp_loadgen}
HERE=bench/ejabberd
RESULTS=bench/results

QUICK=0
RATES=""
PAIRS=""
ONLY="switchboard,noarchive,mam"
SCENARIOS="openloop,idle"
THREADS=1
FSYNC=always
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --rates) RATES=${2:?--rates needs a list}; shift ;;
    --pairs) PAIRS=${2:?--pairs needs a number}; shift ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --scenarios) SCENARIOS=${2:?--scenarios needs a list}; shift ;;
    --threads) THREADS=${2:?--threads needs a number}; shift ;;
    --fsync) FSYNC=${2:?--fsync needs always or none}; shift ;;
    -h|--help) sed -n '2,24p' "$HERE/compare.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$FSYNC" == always || "$FSYNC" == none ]] || { echo "compare: --fsync must be always or none" >&2; exit 2; }

if ((QUICK)); then
  DUR=3; WARMUP=1; DEF_PAIRS=200; DEF_RATES=1000,2000,4000; IDLE_CONNS=1000; IDLE_USERS=200; IDLE_HOLD=3
else
  DUR=15; WARMUP=2; DEF_PAIRS=1000; DEF_RATES=2000,5000,10000; IDLE_CONNS=5000; IDLE_USERS=1000; IDLE_HOLD=5
fi
PAIRS=${PAIRS:-$DEF_PAIRS}
RATES=${RATES:-$DEF_RATES}
IFS=, read -r -a RATE_LIST <<<"$RATES"

want() { [[ ",$ONLY," == *",$1,"* ]]; }
want_scn() { [[ ",$SCENARIOS," == *",$1,"* ]]; }

want switchboard && for bin in "$SERVER" "$LOADGEN"; do
  [[ -x "$bin" ]] || { echo "compare: $bin not found; build first (./dev bench --ejabberd builds)" >&2; exit 2; }
done
if want noarchive || want mam; then
  [[ -x "$XMPP_LOADGEN" ]] || { echo "compare: $XMPP_LOADGEN not found; build the xmpp_loadgen target" >&2; exit 2; }
fi

# ---- ejabberd from Debian, installed the way scripts/deps.sh installs packages ------
# erlang-p1-sqlite3 is ejabberd's SQLite driver (only "suggested" by the package);
# sqlite3 creates the schema; setpriv (util-linux) runs the node as the ejabberd user.
install_ejabberd() {
  local pkgs=(ejabberd erlang-p1-sqlite3 sqlite3 util-linux iproute2) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "compare: installing ${missing[*]}" >&2
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Where services may start on install, Debian starts the system-wide ejabberd
  # (5222, 5269, 5280 on every interface). This script only wants its own instances.
  if [[ " ${missing[*]} " == *" ejabberd "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet ejabberd 2>/dev/null; then
    echo "compare: stopping and disabling the system ejabberd service the install started" >&2
    $sudo systemctl stop ejabberd || true
    $sudo systemctl disable ejabberd >/dev/null 2>&1 || true
  fi
}
if want noarchive || want mam; then
  install_ejabberd
  [[ $(id -u) -eq 0 ]] || { echo "compare: run as root (ejabberd runs as the ejabberd user via setpriv)" >&2; exit 2; }
fi

# Thousands of sockets on both sides: lift the soft open-files limit to the hard one.
# ejabberd inherits it (setpriv, unlike su, keeps resource limits).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

TS=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS"
LOGS=$RESULTS/$TS-logs
mkdir -p "$LOGS"
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then COMMIT+="-dirty"; fi
EJ_VERSION=$(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null || echo none)

json_escape() {
  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' -e 's/\r//g' | awk 'BEGIN { ORS = "" } { if (NR > 1) print "\\n"; print }'
}
CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//' || true)
MEM_KIB=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
KERNEL=$(uname -srm)
NPROC=$(nproc)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
MACHINE_JSON=$(printf '{"nproc":%s,"cpu_model":"%s","mem_total_kib":%s,"kernel":"%s"}' \
  "$NPROC" "$(printf '%s' "$CPU_MODEL" | json_escape)" "$MEM_KIB" "$(printf '%s' "$KERNEL" | json_escape)")

echo "== Switchboard vs ejabberd $EJ_VERSION, $TS (commit $COMMIT, fsync=$FSYNC, quick=$QUICK, threads=$THREADS)"
echo "== open loop: $PAIRS pairs at ${RATES//,/, } msg/s, ${DUR} s each (+${WARMUP} s warm-up); idle: $IDLE_CONNS connections, $IDLE_USERS users"
echo "== machine: $NPROC cpus, $CPU_MODEL, $((MEM_KIB / 1024)) MiB, $KERNEL"
echo "== load average at start: $LOAD_START (other work on this machine skews the figures)"

# A TCP port no socket uses, below the kernel's ephemeral range: the load generators'
# thousands of client sockets (and their TIME_WAIT remains) take ports from that range,
# and a listener bound there can fail with EADDRINUSE. A race with another program is
# still possible; start_ej then retries with new ports.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
  local p i lo=10000 hi=$((EPHEMERAL_LOW - 1))
  ((hi > lo + 1000)) || { lo=20000; hi=32767; }
  for ((i = 0; i < 200; i++)); do
    p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
    if [[ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

PROBLEMS=()
declare -A FILES=()  # "server/scenario/rate" -> result JSON

# ---- Switchboard: started as bench/run.sh starts it ----------------------------------
SB_PID=""
SB_DATA=""
SB_PORT=""
SB_LOG=""
stop_sb() {
  [[ -n "$SB_PID" ]] || return 0
  local pid=$SB_PID status=0 i
  SB_PID=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      PROBLEMS+=("switchboard pid $pid ignored SIGTERM for 15 s; killed (log: $SB_LOG)")
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || status=$?
  ((status == 0)) || PROBLEMS+=("switchboard exited with status $status after SIGTERM (log: $SB_LOG)")
  [[ -n "$SB_DATA" ]] && rm -rf "$SB_DATA"
  SB_DATA=""
}

# The settings bench/run.sh uses: cheap password hashing, no send-rate limiter, no
# connect or login throttles, many connections per user.
start_sb() {
  local name=$1 i
  stop_sb
  SB_DATA=$(mktemp -d "${TMPDIR:-/tmp}/sb-ejcmp-data.XXXXXX")
  SB_LOG=$LOGS/switchboard-$name.log
  "$SERVER" serve --listen 127.0.0.1:0 --data-dir "$SB_DATA" \
    --set store.fsync="$FSYNC" \
    --set auth.password_ops=1 --set auth.password_mem_kib=8192 \
    --set limits.send_rate_per_s=1e9 --set limits.send_burst=1e9 \
    --set server.connects_per_ip_per_s=0 --set limits.login_attempts_per_ip_per_min=1e9 \
    --set server.max_connections_per_user=100000 \
    2>"$SB_LOG" &
  SB_PID=$!
  SB_PORT=""
  for ((i = 0; i < 300; i++)); do
    SB_PORT=$(grep -m1 -o 'event=listening addr=[^ ]*' "$SB_LOG" 2>/dev/null | sed 's/.*://' || true)
    [[ -n "$SB_PORT" ]] && break
    kill -0 "$SB_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$SB_PORT" ]]; then
    echo "compare: switchboard did not start for $name; last log lines:" >&2
    tail -n 20 "$SB_LOG" >&2 || true
    PROBLEMS+=("switchboard did not start for $name (log: $SB_LOG)")
    stop_sb
    return 1
  fi
  echo "-- switchboard pid $SB_PID on 127.0.0.1:$SB_PORT (log $SB_LOG)"
}

# ---- ejabberd: our config, our node, our directories ---------------------------------
EJ_DIR=""
EJ_PID=""      # the ejabberdctl wrapper we started (parent of the node)
EJ_BEAM=""     # the node's OS process (beam.smp): the one measured
EJ_PORT=""
EJ_VARIANT=""
EJ_NAME=""

# Debian's ejabberdctl runs the node as the `ejabberd` user: as root it would `su`, and
# su's PAM session resets the open-files limit to 1024 (too few for thousands of
# connections). Calling it as that user already, with setpriv, keeps our limits;
# HOME points into the run's directory so nothing is written to /var/lib/ejabberd.
ejctl() {
  setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME="$EJ_DIR" \
    ejabberdctl --config-dir "$EJ_DIR" --config "$EJ_DIR/ejabberd.yml" --ctl-config "$EJ_DIR/ejabberdctl.cfg" \
    --spool "$EJ_DIR/spool" --logs "$EJ_DIR/logs" "$@"
}

stop_ej() {
  [[ -n "$EJ_PID" ]] || return 0
  local pid=$EJ_PID i
  EJ_PID=""
  ejctl stop >/dev/null 2>&1 || true
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    PROBLEMS+=("ejabberd ($EJ_NAME) did not stop within 30 s of 'ejabberdctl stop'; sent SIGTERM to beam pid $EJ_BEAM")
    [[ -n "$EJ_BEAM" ]] && kill -TERM "$EJ_BEAM" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      [[ -n "$EJ_BEAM" ]] && kill -KILL "$EJ_BEAM" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  EJ_BEAM=""
  if [[ -n "$EJ_DIR" ]]; then
    cp "$EJ_DIR/ejabberd.yml" "$LOGS/ejabberd-$EJ_NAME.yml" 2>/dev/null || true
    cat "$EJ_DIR"/logs/*.log >"$LOGS/ejabberd-$EJ_NAME.log" 2>/dev/null || true
    if [[ "${KEEP:-0}" == 1 ]]; then
      echo "-- kept $EJ_DIR"
    else
      rm -rf "$EJ_DIR"
    fi
  fi
  EJ_DIR=""
}

# start_ej VARIANT NAME: a fresh node with an empty spool (and database). A second try
# with new ports if the first fails (a port taken between choosing and binding it).
start_ej() {
  start_ej_once "$@" 1 || start_ej_once "$@" 2
}

start_ej_once() {
  local variant=$1 name=$2 attempt=$3 dist node cookie i
  stop_ej
  EJ_VARIANT=$variant
  EJ_NAME=$name
  EJ_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sb-ejabberd.XXXXXX")
  chmod 755 "$EJ_DIR"
  mkdir -p "$EJ_DIR/spool" "$EJ_DIR/logs"
  EJ_PORT=$(free_port) || { PROBLEMS+=("no free port for ejabberd"); return 1; }
  dist=$(free_port) || { PROBLEMS+=("no free port for ejabberd"); return 1; }
  [[ "$dist" != "$EJ_PORT" ]] || dist=$((EJ_PORT + 1))
  node="sbbench$$x${RANDOM}@localhost"
  cookie=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 32)
  if [[ "$variant" == mam ]]; then
    sed -e "s|@C2S_PORT@|$EJ_PORT|g" -e "s|@DIR@|$EJ_DIR|g" "$HERE/ejabberd.yml.in" >"$EJ_DIR/ejabberd.yml"
    sqlite3 "$EJ_DIR/ejabberd.db" </usr/share/ejabberd/sql/lite.sql
  else
    sed -e "s|@C2S_PORT@|$EJ_PORT|g" -e "s|@DIR@|$EJ_DIR|g" -e '/# mam-only$/d' "$HERE/ejabberd.yml.in" >"$EJ_DIR/ejabberd.yml"
  fi
  sed -e "s|@NODE@|$node|g" -e "s|@DIST_PORT@|$dist|g" -e "s|@COOKIE@|$cookie|g" -e "s|@DIR@|$EJ_DIR|g" \
    "$HERE/ejabberdctl.cfg.in" >"$EJ_DIR/ejabberdctl.cfg"
  # ejabberdctl points Erlang at $CONFIG_DIR/inetrc; host lookups as usual.
  echo '{lookup, [file, native]}.' >"$EJ_DIR/inetrc"
  chown -R ejabberd:ejabberd "$EJ_DIR"
  (cd "$EJ_DIR" && exec setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME="$EJ_DIR" \
    ejabberdctl --config-dir "$EJ_DIR" --config "$EJ_DIR/ejabberd.yml" --ctl-config "$EJ_DIR/ejabberdctl.cfg" \
    --spool "$EJ_DIR/spool" --logs "$EJ_DIR/logs" foreground) >>"$LOGS/ejabberd-$name.out" 2>&1 &
  EJ_PID=$!
  EJ_BEAM=""
  for ((i = 0; i < 600; i++)); do
    kill -0 "$EJ_PID" 2>/dev/null || break
    if [[ -s "$EJ_DIR/ejabberd.pid" && -n "$(ss -Htln "sport = :$EJ_PORT" 2>/dev/null)" ]]; then
      EJ_BEAM=$(cat "$EJ_DIR/ejabberd.pid")
      break
    fi
    sleep 0.1
  done
  if [[ -z "$EJ_BEAM" ]] || ! ejctl started >/dev/null 2>&1; then
    echo "compare: ejabberd did not start for $name; last lines:" >&2
    tail -n 20 "$LOGS/ejabberd-$name.out" >&2 || true
    cat "$EJ_DIR"/logs/error.log >&2 2>/dev/null || true
    PROBLEMS+=("ejabberd did not start for $name, attempt $attempt (log: $LOGS/ejabberd-$name.out)")
    stop_ej
    return 1
  fi
  echo "-- ejabberd $variant: node $node, beam pid $EJ_BEAM, c2s on 127.0.0.1:$EJ_PORT (dir $EJ_DIR)"
}

cleanup() {
  stop_sb
  stop_ej
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# run_tool SERVER SCENARIO RATE CMD...: one load generator run, output kept and checked.
run_tool() {
  local server=$1 scn=$2 rate=$3 name json rc=0
  shift 3
  name="$server-$scn${rate:+-$rate}"
  json=$RESULTS/$TS-ejcmp-$name.json
  echo
  echo "== $name: $(basename "$1") ${*:2}"
  "$@" --json "$json" --tag bench="ejabberd-compare" --tag server="$server" --tag commit="$COMMIT" \
    --tag quick="$QUICK" | tee "$LOGS/$name.out" || rc=$?
  if ((rc != 0)) || [[ ! -s "$json" ]]; then
    PROBLEMS+=("$name: load generator exited with status $rc")
    return 0
  fi
  FILES["$server/$scn/${rate:-0}"]=$json
}

# Every point gets a fresh server and an empty data directory (spool, database): a
# server still working off the previous point's backlog would skew the next one.
run_server_set() {
  local server=$1 r
  if want_scn openloop; then
    for r in "${RATE_LIST[@]}"; do
      if [[ "$server" == switchboard ]]; then
        start_sb "openloop-$r" || continue
        run_tool "$server" openloop "$r" "$LOADGEN" --url "ws://127.0.0.1:$SB_PORT/v1/ws" --server-pid "$SB_PID" \
          --threads "$THREADS" --scenario senders --pairs "$PAIRS" --rate "$r" --duration "$DUR" --warmup "$WARMUP" \
          --tag fsync="$FSYNC"
        kill -0 "$SB_PID" 2>/dev/null || { PROBLEMS+=("switchboard died during open loop at $r"); SB_PID=""; }
        stop_sb
      else
        start_ej "$server" "$server-openloop-$r" || continue
        run_tool "$server" openloop "$r" "$XMPP_LOADGEN" --url "xmpp://127.0.0.1:$EJ_PORT" --server-pid "$EJ_BEAM" \
          --threads "$THREADS" --scenario openloop --pairs "$PAIRS" --rate "$r" --duration "$DUR" --warmup "$WARMUP" \
          --tag ejabberd="$EJ_VERSION"
        kill -0 "$EJ_BEAM" 2>/dev/null || PROBLEMS+=("ejabberd ($server) died during open loop at $r")
        stop_ej
      fi
    done
  fi
  if want_scn idle; then
    if [[ "$server" == switchboard ]]; then
      if start_sb idle; then
        run_tool "$server" idle "" "$LOADGEN" --url "ws://127.0.0.1:$SB_PORT/v1/ws" --server-pid "$SB_PID" \
          --threads "$THREADS" --scenario idle --connections "$IDLE_CONNS" --users "$IDLE_USERS" --duration "$IDLE_HOLD" \
          --tag fsync="$FSYNC"
        stop_sb
      fi
    elif start_ej "$server" "$server-idle"; then
      run_tool "$server" idle "" "$XMPP_LOADGEN" --url "xmpp://127.0.0.1:$EJ_PORT" --server-pid "$EJ_BEAM" \
        --threads "$THREADS" --scenario idle --connections "$IDLE_CONNS" --users "$IDLE_USERS" --duration "$IDLE_HOLD" \
        --tag ejabberd="$EJ_VERSION"
      stop_ej
    fi
  fi
}

started=$(date +%s)
for s in switchboard noarchive mam; do
  want "$s" && run_server_set "$s"
done

# ---- the table ------------------------------------------------------------------------
# jnum FILE OBJECT KEY: a number from loadgen's one-line JSON; OBJECT "" for a key that
# is unique in the file. Both tools write the same names.
jnum() {
  local f=$1 obj=$2 key=$3 src
  [[ -n "$f" && -s "$f" ]] || { echo null; return; }
  if [[ -n "$obj" ]]; then
    src=$(grep -o "\"$obj\":{[^}]*}" "$f" | head -n1)
  else
    src=$(cat "$f")
  fi
  local v
  v=$(grep -o "\"$key\":-\{0,1\}[0-9.]*" <<<"$src" | head -n1 | cut -d: -f2)
  echo "${v:-null}"
}
# lat FILE OBJECT KEY: a latency percentile, null when the histogram holds nothing (a
# run where no message was acknowledged or delivered inside the window).
lat() {
  if [[ "$(jnum "$1" "$2" count)" == 0 ]]; then echo null; else jnum "$1" "$2" "$3"; fi
}
ms() { awk -v v="$1" 'BEGIN { if (v == "null") print "-"; else printf "%.2f", v / 1000 }'; }
num0() { awk -v v="$1" 'BEGIN { if (v == "null") print "-"; else printf "%.0f", v }'; }
# ratio A B: A/B with two digits, "-" if either is missing or B is zero.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "null" || b == "null" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

label() {
  case $1 in
    switchboard) echo "switchboard" ;;
    noarchive) echo "ejabberd, no archive" ;;
    mam) echo "ejabberd, mod_mam/sqlite" ;;
  esac
}

ROWS_JSON=()
echo
echo "== summary ($(($(date +%s) - started)) s; load average now $(cut -d' ' -f1-3 /proc/loadavg); latencies in ms)"
if want_scn openloop; then
  echo "  open loop, 1:1, $PAIRS pairs; dlv = send -> recipient reads it, ack = send -> the server's ack, both from the scheduled send time"
  echo "  ratios are theirs/ours for latency (above 1: ours is lower) and ours/theirs for deliveries/s (above 1: ours delivers more)"
  printf '  %-6s %-25s %8s %8s | %8s %8s %8s | %8s %8s %8s | %7s %6s | %-9s %-9s\n' \
    rate server acked/s deliv/s "dlv p50" p99 p99.9 "ack p50" p99 p99.9 unacked closed "p99 ratio" "dlv/s rat"
  for r in "${RATE_LIST[@]}"; do
    ours=${FILES["switchboard/openloop/$r"]:-}
    o_p99=$(lat "$ours" delivery_latency_us p99)
    o_dps=$(jnum "$ours" "" delivered_per_s)
    for s in switchboard noarchive mam; do
      want "$s" || continue
      f=${FILES["$s/openloop/$r"]:-}
      dps=$(jnum "$f" "" delivered_per_s)
      aps=$(jnum "$f" "" acked_per_s)
      d50=$(lat "$f" delivery_latency_us p50); d99=$(lat "$f" delivery_latency_us p99); d999=$(lat "$f" delivery_latency_us p999)
      a50=$(lat "$f" ack_latency_us p50); a99=$(lat "$f" ack_latency_us p99); a999=$(lat "$f" ack_latency_us p999)
      unacked=$(jnum "$f" totals unacked_at_end); closed=$(jnum "$f" "" closed_unexpected)
      r99="" rdps=""
      if [[ "$s" != switchboard ]]; then r99=$(ratio "$d99" "$o_p99"); rdps=$(ratio "$o_dps" "$dps"); fi
      printf '  %-6s %-25s %8s %8s | %8s %8s %8s | %8s %8s %8s | %7s %6s | %-9s %-9s\n' "$r" "$(label "$s")" "$(num0 "$aps")" "$(num0 "$dps")" \
        "$(ms "$d50")" "$(ms "$d99")" "$(ms "$d999")" "$(ms "$a50")" "$(ms "$a99")" "$(ms "$a999")" \
        "$(num0 "$unacked")" "$(num0 "$closed")" "$r99" "$rdps"
      ROWS_JSON+=("$(printf '{"scenario":"openloop","rate":%s,"server":"%s","file":"%s","acked_per_s":%s,"delivered_per_s":%s,"deliv_p50_us":%s,"deliv_p99_us":%s,"deliv_p999_us":%s,"ack_p50_us":%s,"ack_p99_us":%s,"ack_p999_us":%s,"unacked_at_end":%s,"closed_unexpected":%s,"deliv_p99_ratio_theirs_over_ours":%s,"delivered_ratio_ours_over_theirs":%s}' \
        "$r" "$s" "${f:-}" "$aps" "$dps" "$d50" "$d99" "$d999" "$a50" "$a99" "$a999" "$unacked" "$closed" \
        "$( [[ -n "$r99" && "$r99" != - ]] && echo "$r99" || echo null)" "$( [[ -n "$rdps" && "$rdps" != - ]] && echo "$rdps" || echo null)")")
    done
  done
fi
if want_scn idle; then
  echo
  echo "  idle: $IDLE_CONNS connections ($IDLE_USERS users); bytes/conn = server RSS growth / connections; ratios theirs/ours (bytes) and ours/theirs (conn/s)"
  printf '  %-25s %11s %10s %12s | %-11s %-11s\n' server connections conn/s bytes/conn "bytes ratio" "conn/s rat"
  ours=${FILES["switchboard/idle/0"]:-}
  o_b=$(jnum "$ours" "" bytes_per_connection)
  o_c=$(jnum "$ours" connect rate_per_s)
  for s in switchboard noarchive mam; do
    want "$s" || continue
    f=${FILES["$s/idle/0"]:-}
    b=$(jnum "$f" "" bytes_per_connection); c=$(jnum "$f" connect rate_per_s); n=$(jnum "$f" results connections)
    rb="" rc=""
    if [[ "$s" != switchboard ]]; then rb=$(ratio "$b" "$o_b"); rc=$(ratio "$o_c" "$c"); fi
    printf '  %-25s %11s %10s %12s | %-11s %-11s\n' "$(label "$s")" "$(num0 "$n")" "$(num0 "$c")" "$(num0 "$b")" "$rb" "$rc"
    ROWS_JSON+=("$(printf '{"scenario":"idle","server":"%s","file":"%s","connections":%s,"connect_per_s":%s,"bytes_per_connection":%s,"bytes_ratio_theirs_over_ours":%s,"connect_ratio_ours_over_theirs":%s}' \
      "$s" "${f:-}" "$n" "$c" "$b" "$( [[ -n "$rb" && "$rb" != - ]] && echo "$rb" || echo null)" "$( [[ -n "$rc" && "$rc" != - ]] && echo "$rc" || echo null)")")
  done
fi

# ---- one JSON with the parameters, the table rows and every run's full result ----------
COMBINED=$RESULTS/$TS-ejabberd-compare.json
{
  printf '{"tool":"ejabberd-compare","format_version":1,"started_at":"%s","commit":"%s","quick":%s,' "$TS" "$COMMIT" "$QUICK"
  printf '"ejabberd_version":"%s","machine":%s,"load_average_start":"%s","load_average_end":"%s",' \
    "$EJ_VERSION" "$MACHINE_JSON" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '"parameters":{"pairs":%s,"rates":[%s],"duration_s":%s,"warmup_s":%s,"idle_connections":%s,"idle_users":%s,"idle_hold_s":%s,"threads":%s,"switchboard_fsync":"%s"},' \
    "$PAIRS" "$RATES" "$DUR" "$WARMUP" "$IDLE_CONNS" "$IDLE_USERS" "$IDLE_HOLD" "$THREADS" "$FSYNC"
  printf '"rows":['
  sep=""
  for row in "${ROWS_JSON[@]}"; do printf '%s%s' "$sep" "$row"; sep=","; done
  printf '],"runs":{'
  sep=""
  for k in "${!FILES[@]}"; do
    printf '%s"%s":' "$sep" "$k"
    tr -d '\n' <"${FILES[$k]}"
    sep=","
  done
  printf '},"problems":['
  sep=""
  for p in "${PROBLEMS[@]}"; do printf '%s"%s"' "$sep" "$(printf '%s' "$p" | json_escape)"; sep=","; done
  printf ']}\n'
} >"$COMBINED"
echo
echo "== written: $COMBINED (and $RESULTS/$TS-ejcmp-*.json, logs in $LOGS)"
if ((${#PROBLEMS[@]})); then
  echo "== problems"
  for p in "${PROBLEMS[@]}"; do echo "  $p"; done
fi
