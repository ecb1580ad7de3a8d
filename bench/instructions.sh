#!/usr/bin/env bash
# User-space instructions pgwarden executes per pgbench transaction, counted
# by valgrind's callgrind: a figure that does not move with the noise of a
# shared 2-core machine, for comparing two versions of the message path.
# One client, select-only; warm-up transactions are not counted. Prints the
# total per transaction and the functions with the most instructions of
# their own.
#
#   bench/instructions.sh                      # prepared mode, 2000 transactions
#   MODE=simple TX=5000 TOP=40 bench/instructions.sh
#   BIN=/path/to/other/pgwarden bench/instructions.sh   # another build
#   LOOKUP=agent bench/instructions.sh   # masked point lookups (bench/masked.sh's
#                                        # workload, trail on) as agent, limited or dba
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-prepared}
LOOKUP=${LOOKUP:-}
TX=${TX:-2000}
TOP=${TOP:-25}

source bench/lib.sh
command -v valgrind >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
warden_bin

WORK=$(mktemp -d /tmp/pgwarden-instr.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
PG_PORT=$(free_port); WARDEN_PORT=$(free_port)
cleanup() {
  [ -n "${VG_PID:-}" ] && kill "$VG_PID" 2>/dev/null || true
  stop_postgres
  rm -rf "$WORK"
}
trap cleanup EXIT

start_postgres "$PG_PORT"
if [ -n "$LOOKUP" ]; then
  masked_workload "$PG_PORT" "$WORK"
  masked_warden_config "$WORK/pgwarden.toml" "$WARDEN_PORT" "$PG_PORT" "$WORK"
  printf '%s\n' '\set id random(1, 100000)' \
    'SELECT id, name, phone, city FROM customers WHERE id = :id;' > "$WORK/lookup.sql"
  WORKLOAD=(-f "$WORK/lookup.sql" -U "$LOOKUP")
else
  pgbench -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
  plain_warden_config "$WORK/pgwarden.toml" "$WARDEN_PORT" "$PG_PORT"
  WORKLOAD=(-S -U postgres)
fi
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p" \
  "$BIN" run --config "$WORK/pgwarden.toml" 2>"$WORK/valgrind.log" &
VG_PID=$!
for _ in $(seq 120); do
  pg_isready -q -h 127.0.0.1 -p "$WARDEN_PORT" 2>/dev/null && break
  sleep 0.5
done
run() {
  pgbench -n "${WORKLOAD[@]}" -M "$MODE" -c 1 -t "$1" -h 127.0.0.1 -p "$WARDEN_PORT" postgres >/dev/null 2>&1
}
run 300
callgrind_control -z "$VG_PID" >/dev/null
run "$TX"
callgrind_control -d "$VG_PID" >/dev/null
sleep 1
DUMP=$(ls "$WORK"/callgrind.*.1)

# Each function's own instructions (calls to others are not counted in it).
python3 - "$DUMP" "$TX" "$TOP" "$MODE" <<'PY'
import collections, re, sys
path, tx, top, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names, own, fn, skip = {}, collections.Counter(), None, False
for line in open(path):
    m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line.rstrip('\n'))
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1) == 'fn':
            fn = names.get(m.group(2))
        continue
    if line.startswith('calls='):
        skip = True
        continue
    if line[:1].isdigit() or line[:1] in '+-*':
        if skip:
            skip = False
            continue
        parts = line.split()
        if fn and len(parts) > 1:
            own[fn] += int(parts[1])
total = sum(own.values())
print(f'{mode} mode, 1 client: {total / tx:,.0f} instructions per transaction in pgwarden (all threads)')
for name, n in own.most_common(top):
    print(f'{n / tx:8,.0f}  {100 * n / total:5.1f}%  {name[:110]}')
PY
