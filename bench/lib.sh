# Shared by the benchmark scripts: run as postgres when root, free ports, a
# throwaway PostgreSQL in $WORK/data, and HAProxy as a bare TCP relay.
# Callers set WORK and PGBIN first.

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_postgres PORT: initdb and start a cluster listening on 127.0.0.1:PORT.
start_postgres() {
  as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres -A trust --no-sync >/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
    -o "-p $1 -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=256MB" start >/dev/null
}

stop_postgres() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
}

# detached CMD...: run CMD in the background in a session of its own, as a
# service manager or a daemon (PgBouncer's -d) would; sets DETACHED_PID.
# With the kernel's autogroup scheduling (on by default), CPU is shared
# fairly between sessions first: a proxy left in the session of the pgbench
# that drives it would split one share with pgbench, while a daemonized
# PgBouncer gets a share of its own. Every proxy is started this way so
# that all compete on the same terms.
detached() {
  setsid "$@" </dev/null &
  DETACHED_PID=$!
}

# start_relay LISTEN_PORT SERVER_PORT: HAProxy in TCP mode; sets HAPROXY_PID.
start_relay() {
  cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen pg
  bind 127.0.0.1:$1
  server db 127.0.0.1:$2
CFG
  detached haproxy -f "$WORK/haproxy.cfg" >/dev/null 2>&1
  HAPROXY_PID=$DETACHED_PID
}

# plain_warden_config FILE LISTEN_PORT SERVER_PORT: a pgwarden config with no
# policy, trail or TLS, logging warnings only.
plain_warden_config() {
  cat > "$1" <<CFG
listen = "127.0.0.1:$2"
upstream = "127.0.0.1:$3"
[log]
level = "warn"
CFG
}

# warden_bin: set BIN to the pgwarden binary to measure: BIN as given
# (another build, e.g. bench/pgo.sh's target/pgo/release/pgwarden), or the
# plain release build, built first.
warden_bin() {
  if [ -z "${BIN:-}" ]; then
    cargo build --release -q
    BIN=target/release/pgwarden
  fi
  [ -x "$BIN" ] || { echo "$BIN is not an executable" >&2; exit 1; }
}

# cpu_ticks PID: user + system CPU time of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# masked_workload PORT DIR: the customers table (100,000 rows, names and
# phones), logins agent (masked), limited (masked, every limit on, never
# reached) and dba (full access), and their policy in DIR/policies.
masked_workload() {
  "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$1" -U postgres postgres <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text, phone text, city text);
INSERT INTO customers
  SELECT i, '客户' || i, '138' || lpad((i * 7919 % 100000000)::text, 8, '0'), 'city' || (i % 300)
  FROM generate_series(1, 100000) i;
CREATE ROLE agent LOGIN; CREATE ROLE dba LOGIN; CREATE ROLE limited LOGIN;
GRANT SELECT ON customers TO agent, dba, limited;
VACUUM ANALYZE customers;
SQL
  mkdir -p "$2/policies"
  cat > "$2/policies/bench.yaml" <<'YAML'
classify:
  public.customers: {name: person_name, phone: phone}
subjects:
  public.customers: id
roles:
  limited:
    users: [limited]
    access: {person_name: mask, phone: mask, "*": deny}
    lookup: equality
    limits:
      rows_per_query: 1000
      classified_rows_per_hour: 1000000000
      distinct_subjects: {alert: 1000000000, block: 1000000000}
      lookups_per_hour: 1000000000
  support:
    users: [agent]
    access: {person_name: mask, phone: mask, "*": deny}
    lookup: equality
  dba:
    users: [dba]
    access: {"*": allow}
YAML
}

# masked_warden_config FILE LISTEN_PORT SERVER_PORT DIR: pgwarden with the
# policies of masked_workload and the audit trail on (DURABILITY, async by
# default) in DIR.
masked_warden_config() {
  cat > "$1" <<CFG
listen = "127.0.0.1:$2"
upstream = "127.0.0.1:$3"
policies = "$4/policies"
[catalog]
user = "postgres"
[log]
level = "warn"
[audit]
dir = "$4/trail"
key_file = "$4/audit.key"
durability = "${DURABILITY:-async}"
CFG
  head -c 32 /dev/urandom > "$4/audit.key"
}
