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
  haproxy -f "$WORK/haproxy.cfg" >/dev/null 2>&1 &
  HAPROXY_PID=$!
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

# cpu_ticks PID: user + system CPU time of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
