#!/usr/bin/env bash
# pgbench select-only through pgwarden, straight to PostgreSQL, through
# PgBouncer (session mode) and through HAProxy in TCP mode (a bare relay: the
# floor cost of any proxy hop). Runs are interleaved (every target in turn for
# each setting, ROUNDS times) and the median TPS of each is reported.
#
#   BENCH_SECONDS=15 ROUNDS=3 SCALE=10 bench/pgbench.sh
#   CPU_PER_TX=10000 ROUNDS=2 bench/pgbench.sh   # proxy CPU per transaction
#   STRACE=1 CPU_PER_TX=5000 ROUNDS=1 bench/pgbench.sh  # + syscall counts in /tmp/strace-*.txt
#   RESIDENCE=20000 CLIENTS=1 bench/pgbench.sh  # how long each proxy holds a message (bpftrace, root)
#   TARGETS="pgbouncer pgwarden pgwarden-w1" bench/pgbench.sh  # pgwarden-wN: workers = N
#   TARGETS="pgbouncer pgwarden pgwarden-pgo" bench/pgbench.sh # + bench/pgo.sh's build
#   BIN=target/pgo/release/pgwarden bench/pgbench.sh   # another build than target/release
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-15}
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-"1 8"}
MODES=${MODES:-"simple prepared"}
TARGETS=${TARGETS:-"direct relay pgbouncer pgwarden"}

source bench/lib.sh
missing=()
command -v pgbouncer >/dev/null || missing+=(pgbouncer)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start system services we do not want.
  systemctl stop pgbouncer haproxy 2>/dev/null || service pgbouncer stop 2>/dev/null || true
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

warden_bin
WORK=$(mktemp -d /tmp/pgwarden-bench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
PG_PORT=$(free_port); RELAY_PORT=$(free_port); BOUNCER_PORT=$(free_port); WARDEN_PORT=$(free_port)

cleanup() {
  [ -n "${WARDEN_PID:-}" ] && kill "$WARDEN_PID" 2>/dev/null || true
  for p in "${EXTRA_PID[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -n "${HAPROXY_PID:-}" ] && kill "$HAPROXY_PID" 2>/dev/null || true
  [ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
  stop_postgres
  rm -rf "$WORK"
}
trap cleanup EXIT

start_postgres "$PG_PORT"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1

start_relay "$RELAY_PORT" "$PG_PORT"

echo '"postgres" ""' > "$WORK/userlist.txt"
cat > "$WORK/pgbouncer.ini" <<CFG
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
pidfile = $WORK/pgbouncer.pid
logfile = $WORK/pgbouncer.log
CFG
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"/pgbouncer.ini "$WORK"/userlist.txt
as_pg pgbouncer -d "$WORK/pgbouncer.ini"

plain_warden_config "$WORK/pgwarden.toml" "$WARDEN_PORT" "$PG_PORT"
detached "$BIN" run --config "$WORK/pgwarden.toml" 2>"$WORK/pgwarden.log"
WARDEN_PID=$DETACHED_PID
# More pgwarden instances: pgwarden-wN with `workers = N`, pgwarden-pgo
# built by bench/pgo.sh (profile-guided).
declare -A EXTRA_PORT EXTRA_PID
for t in $TARGETS; do
  bin=$BIN
  case $t in
    pgwarden-w*) ;;
    pgwarden-pgo) bin=target/pgo/release/pgwarden
                  [ -x "$bin" ] || { echo "$bin is missing: run bench/pgo.sh first" >&2; exit 1; } ;;
    *) continue ;;
  esac
  EXTRA_PORT[$t]=$(free_port)
  plain_warden_config "$WORK/$t.toml" "${EXTRA_PORT[$t]}" "$PG_PORT"
  [[ $t =~ ^pgwarden-w([0-9]+)$ ]] && sed -i "1i workers = ${BASH_REMATCH[1]}" "$WORK/$t.toml"
  detached "$bin" run --config "$WORK/$t.toml" 2>"$WORK/$t.log"
  EXTRA_PID[$t]=$DETACHED_PID
done
sleep 1

port_of() { case $1 in direct) echo "$PG_PORT";; relay) echo "$RELAY_PORT";; pgbouncer) echo "$BOUNCER_PORT";; pgwarden) echo "$WARDEN_PORT";; *) echo "${EXTRA_PORT[$1]}";; esac; }
pid_of() { case $1 in relay) echo "$HAPROXY_PID";; pgbouncer) cat "$WORK/pgbouncer.pid";; pgwarden) echo "$WARDEN_PID";; *) echo "${EXTRA_PID[$1]}";; esac; }

# each_proxy FN: call `FN ROUND MODE CLIENTS PROXY` for every mode and
# client count and each proxy among TARGETS, in an order rotated every
# round, ROUNDS times.
each_proxy() {
  local proxies=() round mode c k t
  for t in $TARGETS; do [ "$t" = direct ] || proxies+=("$t"); done
  local n=${#proxies[@]}
  for round in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
      for c in $CLIENTS; do
        for ((k = 0; k < n; k++)); do
          "$1" "$round" "$mode" "$c" "${proxies[$(( (k + round) % n ))]}"
        done
      done
    done
  done
}

# CPU_PER_TX=N: instead of throughput, each proxy's own CPU time and
# context switches per transaction over N transactions per client (utime +
# stime and voluntary + involuntary switches of all its threads, from
# /proc), for every mode and client count, ROUNDS times in rotating order.
if [ -n "${CPU_PER_TX:-}" ]; then
  switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }
  # Busy and idle ticks of the whole machine (all CPUs), and the CPU of
  # the server's exited backends (the postmaster's reaped children).
  machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
  children() { awk '{print $16 + $17}' "/proc/$1/stat"; }
  pg=$(head -1 "$WORK/data/postmaster.pid")
  tick=$(getconf CLK_TCK)
  cpu_per_tx() {
    local round=$1 mode=$2 c=$3 t=$4
    pid=$(pid_of "$t")
    [ -n "${STRACE:-}" ] && { strace -c -f -o "/tmp/strace-$t-$mode.txt" -p "$pid" 2>/dev/null & STRACE_PID=$!; sleep 1; }
    c0=$(cpu_ticks "$pid"); s0=$(switches "$pid"); read -r -a m0 <<< "$(machine)"; p0=$(children "$pg")
    pgbench -n -S -M "$mode" -c "$c" -j "$(( c < 2 ? c : 2 ))" -t "$CPU_PER_TX" \
      -h 127.0.0.1 -p "$(port_of "$t")" -U postgres postgres >/dev/null 2>&1
    c1=$(cpu_ticks "$pid"); s1=$(switches "$pid"); read -r -a m1 <<< "$(machine)"; p1=$(children "$pg")
    [ -n "${STRACE:-}" ] && { kill -INT "$STRACE_PID"; wait "$STRACE_PID" || true; }
    python3 -c "
n = $CPU_PER_TX * $c
us = lambda ticks: ticks / $tick / n * 1e6
print(f'round $round  $mode c=$c  $t: proxy {us($c1 - $c0):.1f} µs CPU and {($s1 - $s0) / n:.2f} context switches, '
      f'server backends {us($p1 - $p0):.1f} µs, machine busy {us(${m1[0]} - ${m0[0]}):.1f} µs, idle {us(${m1[1]} - ${m0[1]}):.1f} µs per transaction')"
  }
  each_proxy cpu_per_tx
  exit 0
fi

# RESIDENCE=N: instead of throughput, how long each proxy holds a message
# on its way, measured in the kernel by bpftrace over N transactions per
# client: from its epoll_wait returning to its recvfrom (the event loop),
# and from the recvfrom returning to the sendto that forwards the bytes
# (its own work: the part of a transaction's latency a proxy controls).
# Averages over both directions, ROUNDS times in rotating order.
if [ -n "${RESIDENCE:-}" ]; then
  command -v bpftrace >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace >/dev/null
  }
  cat > "$WORK/residence.bt" <<'BT'
tracepoint:syscalls:sys_exit_epoll_wait /pid == $1/ { @woke[tid] = nsecs; }
tracepoint:syscalls:sys_enter_recvfrom /pid == $1 && @woke[tid]/ {
  @loop = stats(nsecs - @woke[tid]); delete(@woke[tid]);
}
tracepoint:syscalls:sys_exit_recvfrom /pid == $1 && args->ret > 0/ { @got[tid] = nsecs; }
tracepoint:syscalls:sys_enter_sendto /pid == $1 && @got[tid]/ {
  @work = stats(nsecs - @got[tid]); delete(@got[tid]);
}
END { clear(@woke); clear(@got); }
BT
  residence() {
    local round=$1 mode=$2 c=$3 t=$4
    bpftrace "$WORK/residence.bt" "$(pid_of "$t")" > "$WORK/residence.out" 2>/dev/null &
    BT_PID=$!
    sleep 3  # attaching takes a moment
    pgbench -n -S -M "$mode" -c "$c" -j "$(( c < 2 ? c : 2 ))" -t "$RESIDENCE" \
      -h 127.0.0.1 -p "$(port_of "$t")" -U postgres postgres >/dev/null 2>&1
    # bpftrace prints its figures on SIGINT; it seldom misses one.
    kill -INT "$BT_PID"
    for _ in $(seq 50); do kill -0 "$BT_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$BT_PID" 2>/dev/null || true
    wait "$BT_PID" 2>/dev/null || true
    python3 - "$WORK/residence.out" "round $round  $mode c=$c  $t" <<'PY'
import re, sys
avg = {m.group(1): int(m.group(2)) / 1000 for m in
       re.finditer(r'@(\w+): count \d+, average (\d+)', open(sys.argv[1]).read())}
if 'work' in avg:
    print(f"{sys.argv[2]}: event loop {avg['loop']:.1f} µs, own work {avg['work']:.1f} µs per message")
else:
    print(f"{sys.argv[2]}: bpftrace gave no figures")
PY
  }
  each_proxy residence
  exit 0
fi

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for c in $CLIENTS; do
      j=$(( c < 2 ? c : 2 ))
      # Rotate the order every round so no target always runs after another.
      read -r -a tl <<< "$TARGETS"
      n=${#tl[@]}
      for ((k = 0; k < n; k++)); do
        t=${tl[$(( (k + round) % n ))]}
        tps=$(pgbench -n -S -M "$mode" -c "$c" -j "$j" -T "$SECS" -h 127.0.0.1 -p "$(port_of "$t")" -U postgres postgres 2>/dev/null \
              | awk '/^tps = / {print $3}')
        printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$c" "$t" "$tps" >> "$RESULTS"
        printf 'round %s  %-8s c=%-2s %-9s %10.0f tps\n' "$round" "$mode" "$c" "$t" "$tps" >&2
      done
    done
  done
done

python3 - "$RESULTS" "$TARGETS" <<'PY'
import sys, statistics, collections
rows = [l.split('\t') for l in open(sys.argv[1]).read().strip().split('\n')]
targets = sys.argv[2].split()
runs = collections.defaultdict(list)
by_round = collections.defaultdict(dict)
for r, mode, c, t, tps in rows:
    runs[(mode, int(c), t)].append(float(tps))
    by_round[(mode, int(c), r)][t] = float(tps)
# Ratios are paired: pgwarden against another target in the same round
# (minutes apart at most), then the median over rounds, with the range.
# The machine's speed drifts more between rounds than within one.
def ratio(mode, c, a, b):
    rs = [v[a] / v[b] for (m, cc, _), v in by_round.items()
          if m == mode and cc == c and a in v and b in v and v[b]]
    if not rs:
        return "-"
    return f"{statistics.median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})"
print("| mode | clients | " + " | ".join(targets) + " | pgwarden/relay | pgwarden/pgbouncer | pgwarden/direct |")
print("|---|---|" + "---|" * (len(targets) + 3))
for mode in dict.fromkeys(k[0] for k in runs):
    for c in sorted(set(k[1] for k in runs if k[0] == mode)):
        m = {t: statistics.median(runs[(mode, c, t)]) for t in targets if (mode, c, t) in runs}
        print(f"| {mode} | {c} | " + " | ".join(f"{m.get(t, 0):.0f}" for t in targets)
              + " | " + " | ".join(ratio(mode, c, "pgwarden", b) for b in ("relay", "pgbouncer", "direct")) + " |")
# Further pgwarden builds or settings (pgwarden-wN, pgwarden-pgo), each
# against the others in the same rounds.
extra = [t for t in targets if t.startswith("pgwarden-")]
if extra:
    print()
    print("| mode | clients | target | /pgwarden | /relay | /pgbouncer |")
    print("|---|---|---|---|---|---|")
    for mode in dict.fromkeys(k[0] for k in runs):
        for c in sorted(set(k[1] for k in runs if k[0] == mode)):
            for t in extra:
                print(f"| {mode} | {c} | {t} | " + " | ".join(ratio(mode, c, t, b) for b in ("pgwarden", "relay", "pgbouncer")) + " |")
PY
