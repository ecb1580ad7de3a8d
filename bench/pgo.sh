#!/usr/bin/env bash
# A profile-guided release build of pgwarden: build it instrumented, run
# it in front of a throwaway PostgreSQL under the benchmarks' workloads
# (pgbench select-only as a full-access login, simple and prepared, 1 and 8
# clients; masked point lookups as a restricted login with its limits on;
# the audit trail on and off), then build it again with the profile.
# The binary lands in target/pgo/release/pgwarden; the plain release build
# in target/release is left alone. Both builds keep their own target
# directories (target/pgo-generate, target/pgo) and flags, so a second run
# recompiles only pgwarden itself; its dependencies keep the profile of the
# run that first compiled them (their code does not change).
#
#   bench/pgo.sh                      # build target/pgo/release/pgwarden
#   TRAIN_SECONDS=10 bench/pgo.sh     # seconds per training workload
set -euo pipefail
cd "$(dirname "$0")/.."

TRAIN=${TRAIN_SECONDS:-5}
source bench/lib.sh
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

PROFDATA="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | awk '/^host:/ {print $2}')/bin/llvm-profdata"
[ -x "$PROFDATA" ] || rustup component add llvm-tools >/dev/null
WORK=$(mktemp -d /tmp/pgwarden-pgo.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
PG_PORT=$(free_port); PLAIN_PORT=$(free_port); MASKED_PORT=$(free_port)

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  stop_postgres
  rm -rf "$WORK"
}
trap cleanup EXIT
PIDS=()

GEN=$PWD/target/pgo-generate
PROFILE=$PWD/target/pgo/pgwarden.profdata
echo "building the instrumented binary" >&2
RUSTFLAGS="-Cprofile-generate=$GEN/profiles" \
  cargo build --release -q --locked --target-dir "$GEN"
rm -rf "$GEN/profiles"
BIN=$GEN/release/pgwarden

start_postgres "$PG_PORT"
pgbench -i -q -s 10 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
masked_workload "$PG_PORT" "$WORK"
cat > "$WORK/lookup.sql" <<'SQL'
\set id random(1, 100000)
SELECT id, name, phone, city FROM customers WHERE id = :id;
SQL

plain_warden_config "$WORK/plain.toml" "$PLAIN_PORT" "$PG_PORT"
masked_warden_config "$WORK/masked.toml" "$MASKED_PORT" "$PG_PORT" "$WORK"
for cfg in plain masked; do
  detached "$BIN" run --config "$WORK/$cfg.toml" 2>"$WORK/$cfg.log"
  PIDS+=("$DETACHED_PID")
done
sleep 1

echo "training: ${TRAIN}s per workload" >&2
for mode in simple prepared; do
  for c in 1 8; do
    j=$(( c < 2 ? c : 2 ))
    pgbench -n -S -M "$mode" -c "$c" -j "$j" -T "$TRAIN" \
      -h 127.0.0.1 -p "$PLAIN_PORT" -U postgres postgres >/dev/null
    for user in agent limited dba; do
      pgbench -n -f "$WORK/lookup.sql" -M "$mode" -c "$c" -j "$j" -T "$TRAIN" \
        -h 127.0.0.1 -p "$MASKED_PORT" -U "$user" postgres >/dev/null
    done
  done
done

# The profile is written when the process exits normally.
for p in "${PIDS[@]}"; do
  kill -TERM "$p"
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
done
PIDS=()
mkdir -p "$(dirname "$PROFILE")"
"$PROFDATA" merge -o "$PROFILE" "$GEN"/profiles/*.profraw

echo "building with the profile" >&2
# The flags name the profile's path, not its content: make cargo compile
# pgwarden again for the new profile.
[ -d target/pgo/release ] && cargo clean -q --release -p pgwarden --target-dir target/pgo
RUSTFLAGS="-Cprofile-use=$PROFILE" \
  cargo build --release -q --locked --target-dir target/pgo
echo "target/pgo/release/pgwarden"
