#!/usr/bin/env bash
# Masked point lookups: a support agent reading one customer by id, whose
# name and phone pgwarden masks, compared with the same workload through a
# bare TCP relay (HAProxy, nothing masked), through pgwarden as a masked
# role with every limit switched on (rows per query, hourly rows, distinct
# customers: bookkeeping on every row, never reached), and as a
# full-access role (analysed only to record the columns it reads). The
# trail is on (DURABILITY=async by default).
# Interleaved rounds, median TPS.
#
#   BENCH_SECONDS=15 ROUNDS=3 bench/masked.sh
#   CPU_PER_QUERY=20000 ROUNDS=5 bench/masked.sh        # CPU µs per lookup
#   CPU_PER_QUERY=2000 ROWS=100 ROUNDS=5 bench/masked.sh # per 100-row read
#   BIN=target/pgo/release/pgwarden bench/masked.sh   # another build than target/release
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-15}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-"1 8"}
MODES=${MODES:-"simple prepared"}
TARGETS="relay masked limited fullaccess"

source bench/lib.sh
command -v haproxy >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  systemctl stop haproxy 2>/dev/null || service haproxy stop 2>/dev/null || true
}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

warden_bin
WORK=$(mktemp -d /tmp/pgwarden-masked.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
PG_PORT=$(free_port); RELAY_PORT=$(free_port); WARDEN_PORT=$(free_port)

cleanup() {
  [ -n "${WARDEN_PID:-}" ] && kill "$WARDEN_PID" 2>/dev/null || true
  [ -n "${HAPROXY_PID:-}" ] && kill "$HAPROXY_PID" 2>/dev/null || true
  stop_postgres
  rm -rf "$WORK"
}
trap cleanup EXIT

start_postgres "$PG_PORT"
masked_workload "$PG_PORT" "$WORK"
# ROWS=N reads N consecutive customers per lookup instead of one, to
# show the per-row share of each path.
ROWS=${ROWS:-1}
if [ "$ROWS" = 1 ]; then
  cat > "$WORK/lookup.sql" <<'SQL'
\set id random(1, 100000)
SELECT id, name, phone, city FROM customers WHERE id = :id;
SQL
else
  cat > "$WORK/lookup.sql" <<SQL
\\set id random(1, $(( 100001 - ROWS )))
SELECT id, name, phone, city FROM customers WHERE id BETWEEN :id AND :id + $(( ROWS - 1 ));
SQL
fi
start_relay "$RELAY_PORT" "$PG_PORT"
masked_warden_config "$WORK/pgwarden.toml" "$WARDEN_PORT" "$PG_PORT" "$WORK"
detached "$BIN" run --config "$WORK/pgwarden.toml" 2>"$WORK/pgwarden.log"
WARDEN_PID=$DETACHED_PID
sleep 1
# The masked path really masks.
"$PGBIN/psql" -X -A -t -h 127.0.0.1 -p "$WARDEN_PORT" -U agent postgres -c "SELECT phone FROM customers WHERE id = 1" | grep -q '\*\*\*\*'

run() {
  local t=$1 mode=$2 c=$3 port user
  case $t in
    relay) port=$RELAY_PORT user=agent;;
    masked) port=$WARDEN_PORT user=agent;;
    limited) port=$WARDEN_PORT user=limited;;
    fullaccess) port=$WARDEN_PORT user=dba;;
  esac
  pgbench -n -f "$WORK/lookup.sql" -M "$mode" -c "$c" -j "$(( c < 2 ? c : 2 ))" -T "$SECS" \
    -h 127.0.0.1 -p "$port" -U "$user" postgres 2>/dev/null | awk '/^tps = / {print $3}'
}

# CPU_PER_QUERY=N: instead of throughput, pgwarden's own CPU time per
# lookup (utime + stime from /proc) over N lookups per client and target
# (CPU_CLIENTS clients, 1 by default), simple and prepared: the cost of
# each path without scheduling noise.
# ROUNDS rounds, targets in a rotating order, median per target.
if [ -n "${CPU_PER_QUERY:-}" ]; then
  CPU_CLIENTS=${CPU_CLIENTS:-1}
  tick=$(getconf CLK_TCK)
  CPU_RESULTS="$WORK/cpu.tsv"
  : > "$CPU_RESULTS"
  targets=(masked limited fullaccess)
  for round in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
      for ((k = 0; k < 3; k++)); do
        t=${targets[$(( (k + round) % 3 ))]}
        case $t in masked) user=agent;; limited) user=limited;; fullaccess) user=dba;; esac
        before=$(cpu_ticks "$WARDEN_PID")
        pgbench -n -f "$WORK/lookup.sql" -M "$mode" -c "$CPU_CLIENTS" -j "$(( CPU_CLIENTS < 2 ? CPU_CLIENTS : 2 ))" \
          -t "$CPU_PER_QUERY" -h 127.0.0.1 -p "$WARDEN_PORT" -U "$user" postgres >/dev/null 2>&1
        after=$(cpu_ticks "$WARDEN_PID")
        us=$(python3 -c "print(f'{($after - $before) / $tick / ($CPU_PER_QUERY * $CPU_CLIENTS) * 1e6:.1f}')")
        printf '%s\t%s\t%s\n' "$mode" "$t" "$us" >> "$CPU_RESULTS"
        printf 'round %s  %-8s %-10s %6s µs of pgwarden CPU per lookup\n' "$round" "$mode" "$t" "$us" >&2
      done
    done
  done
  python3 - "$CPU_RESULTS" <<'PY'
import sys, statistics, collections
rows = [l.split('\t') for l in open(sys.argv[1]).read().strip().split('\n')]
by = collections.defaultdict(list)
for mode, t, us in rows:
    by[(mode, t)].append(float(us))
print("| mode | masked | masked + limits | limits cost | full access |")
print("|---|---|---|---|---|")
for mode in dict.fromkeys(k[0] for k in by):
    m = {t: statistics.median(by[(mode, t)]) for t in ("masked", "limited", "fullaccess")}
    print(f"| {mode} | {m['masked']:.1f} µs | {m['limited']:.1f} µs | {m['limited'] - m['masked']:+.1f} µs | {m['fullaccess']:.1f} µs |")
PY
  exit 0
fi

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for c in $CLIENTS; do
      read -r -a tl <<< "$TARGETS"
      n=${#tl[@]}
      for ((k = 0; k < n; k++)); do
        t=${tl[$(( (k + round) % n ))]}
        tps=$(run "$t" "$mode" "$c")
        printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$c" "$t" "$tps" >> "$RESULTS"
        printf 'round %s  %-8s c=%-2s %-10s %10.0f tps\n' "$round" "$mode" "$c" "$t" "$tps" >&2
      done
    done
  done
done

python3 - "$RESULTS" <<'PY'
import sys, statistics, collections
rows = [l.split('\t') for l in open(sys.argv[1]).read().strip().split('\n')]
med = collections.defaultdict(list)
for r, mode, c, t, tps in rows:
    med[(mode, int(c), t)].append(float(tps))
print("| mode | clients | relay | pgwarden masked | masked + limits | pgwarden full access | masked/relay | limits cost | full access/relay |")
print("|---|---|---|---|---|---|---|---|---|")
for mode in dict.fromkeys(k[0] for k in med):
    for c in sorted(set(k[1] for k in med if k[0] == mode)):
        m = {t: statistics.median(med[(mode, c, t)]) for t in ("relay", "masked", "limited", "fullaccess")}
        # Per-statement cost of the limit bookkeeping, from the latency
        # difference at the same client count (µs).
        cost = (c / m['limited'] - c / m['masked']) * 1e6
        print(f"| {mode} | {c} | {m['relay']:.0f} | {m['masked']:.0f} | {m['limited']:.0f} | {m['fullaccess']:.0f} | {m['masked']/m['relay']:.2f} | {cost:+.1f} µs | {m['fullaccess']/m['relay']:.2f} |")
PY
