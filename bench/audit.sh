#!/usr/bin/env bash
# Cost of the audit trail: pgbench select-only through pgwarden without a
# trail, with an `async` trail and with a `sync` trail (group commit,
# results held until their record is fsynced), interleaved rounds, median
# TPS and mean latency; then the records per second written and the fsync
# batches, from pgwarden's metrics.
#
#   BENCH_SECONDS=10 ROUNDS=3 bench/audit.sh
#   BIN=target/pgo/release/pgwarden bench/audit.sh   # another build than target/release
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-"1 8 32"}
MODE=${MODE:-simple}
TARGETS="none async sync"

source bench/lib.sh
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
warden_bin
WORK=$(mktemp -d /tmp/pgwarden-auditbench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
PG_PORT=$(free_port)
declare -A PORT PID MPORT
cleanup() {
  for t in $TARGETS; do [ -n "${PID[$t]:-}" ] && kill "${PID[$t]}" 2>/dev/null || true; done
  stop_postgres
  rm -rf "$WORK"
}
trap cleanup EXIT
start_postgres "$PG_PORT"
pgbench -i -q -s 10 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
head -c 32 /dev/urandom > "$WORK/audit.key"
for t in $TARGETS; do
  PORT[$t]=$(free_port); MPORT[$t]=$(free_port)
  {
    echo "listen = \"127.0.0.1:${PORT[$t]}\""
    echo "upstream = \"127.0.0.1:$PG_PORT\""
    echo "[log]"; echo 'level = "warn"'
    echo "[metrics]"; echo "listen = \"127.0.0.1:${MPORT[$t]}\""
    if [ "$t" != none ]; then
      echo "[audit]"; echo "dir = \"$WORK/trail-$t\""; echo "key_file = \"$WORK/audit.key\""
      echo "durability = \"$t\""
    fi
  } > "$WORK/$t.toml"
  detached "$BIN" run --config "$WORK/$t.toml" 2>"$WORK/$t.log"
  PID[$t]=$DETACHED_PID
done
sleep 1

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for c in $CLIENTS; do
    read -r -a tl <<< "$TARGETS"
    n=${#tl[@]}
    for ((k = 0; k < n; k++)); do
      t=${tl[$(( (k + round) % n ))]}
      out=$(pgbench -n -S -M "$MODE" -c "$c" -j "$(( c < 2 ? c : 2 ))" -T "$SECS" \
        -h 127.0.0.1 -p "${PORT[$t]}" -U postgres postgres 2>/dev/null)
      tps=$(awk '/^tps = / {print $3}' <<< "$out")
      lat=$(awk '/^latency average = / {print $4}' <<< "$out")
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$t" "$tps" "$lat" >> "$RESULTS"
      printf 'round %s c=%-2s %-6s %8.0f tps %6s ms\n' "$round" "$c" "$t" "$tps" "$lat" >&2
    done
  done
done

python3 - "$RESULTS" <<'PY'
import sys, statistics, collections
rows = [l.split('\t') for l in open(sys.argv[1]).read().strip().split('\n')]
tps = collections.defaultdict(list); lat = collections.defaultdict(list)
for r, c, t, p, l in rows:
    tps[(int(c), t)].append(float(p)); lat[(int(c), t)].append(float(l))
print("| clients | no trail TPS | async TPS | sync TPS | sync/none | latency none (ms) | latency sync (ms) | added by sync (ms) |")
print("|---|---|---|---|---|---|---|---|")
for c in sorted(set(k[0] for k in tps)):
    m = {t: statistics.median(tps[(c, t)]) for t in ("none", "async", "sync")}
    l = {t: statistics.median(lat[(c, t)]) for t in ("none", "sync")}
    print(f"| {c} | {m['none']:.0f} | {m['async']:.0f} | {m['sync']:.0f} | {m['sync']/m['none']:.2f} | {l['none']:.3f} | {l['sync']:.3f} | {l['sync']-l['none']:.3f} |")
PY
for t in async sync; do
  m=$(curl -s "http://127.0.0.1:${MPORT[$t]}/metrics")
  recs=$(awk '/^pgwarden_audit_records_total / {print $2}' <<< "$m")
  batches=$(awk -v d="$t" '$1 ~ "^pgwarden_audit_write_seconds_count" && $1 ~ d {print $2}' <<< "$m")
  wsum=$(awk -v d="$t" '$1 ~ "^pgwarden_audit_write_seconds_sum" && $1 ~ d {print $2}' <<< "$m")
  echo "$t: $recs records in $batches writes (mean $(python3 -c "print(f'{$recs/max($batches,1):.1f}')") records and $(python3 -c "print(f'{$wsum/max($batches,1)*1e6:.0f}')") µs per write)"
done
