#!/usr/bin/env bash
# Install and start what ctxpool needs on a fresh Debian machine. Sourced by run.sh and test.sh;
# each step is skipped when its piece is already there. Needs root for apt and dockerd.
set -euo pipefail

CTXPOOL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${CTXPOOL_STATE_DIR:-/tmp/ctxpool-state}"
mkdir -p "$STATE_DIR"

say() { printf '[ctxpool] %s\n' "$*" >&2; }

_apt_updated=0
apt_install() {  # apt_install PACKAGE... (only the ones whose command is missing)
  local missing=()
  for spec in "$@"; do
    local cmd="${spec%%:*}" pkg="${spec##*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$_apt_updated" -eq 0 ]; then
    say "apt-get update"
    apt-get update -qq
    _apt_updated=1
  fi
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_docker() {
  apt_install dockerd:docker.io
  if docker info >/dev/null 2>&1; then return 0; fi
  say "starting dockerd (log: $STATE_DIR/dockerd.log)"
  nohup dockerd >"$STATE_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  say "dockerd did not come up; see $STATE_DIR/dockerd.log"
  tail -20 "$STATE_DIR/dockerd.log" >&2
  return 1
}

ensure_redis() {  # a local Redis on 6379 unless one answers already
  apt_install redis-server:redis-server redis-cli:redis-tools
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    local policy
    policy=$(redis-cli -h 127.0.0.1 -p 6379 config get maxmemory-policy 2>/dev/null | tail -1)
    [ "$policy" = "noeviction" ] || say "WARNING: Redis maxmemory-policy is '$policy', want noeviction"
    return 0
  fi
  say "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --maxmemory-policy noeviction \
    --save '' --appendonly no --logfile "$STATE_DIR/redis.log"
  for _ in $(seq 1 40); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  say "redis-server did not come up; see $STATE_DIR/redis.log"
  return 1
}

ensure_rabbitmq() {  # RabbitMQ on 5672 for the broker matrix
  apt_install rabbitmq-server:rabbitmq-server
  if rabbitmqctl -q status >/dev/null 2>&1; then return 0; fi
  say "starting rabbitmq-server (log: $STATE_DIR/rabbitmq.log)"
  nohup rabbitmq-server >"$STATE_DIR/rabbitmq.log" 2>&1 &
  for _ in $(seq 1 120); do
    rabbitmqctl -q status >/dev/null 2>&1 && return 0
    sleep 1
  done
  say "rabbitmq-server did not come up; see $STATE_DIR/rabbitmq.log"
  return 1
}

ensure_python() {  # the project and its dev tools, editable
  local stamp="$STATE_DIR/pip.stamp"
  if [ -f "$stamp" ] && [ "$stamp" -nt "$CTXPOOL_ROOT/pyproject.toml" ] \
      && python3 -c "import pool, celery, docker, fakeredis, pytest, importlinter" >/dev/null 2>&1; then
    return 0
  fi
  say "installing ctxpool (pip install -e .[dev])"
  python3 -m pip install -q --disable-pip-version-check -e "$CTXPOOL_ROOT[dev]" 2>&1 \
    | grep -v -e '^WARNING: Running pip as' -e 'is ignored: it is neither' >&2 || true
  python3 -c 'import pool' && touch "$stamp"
}

ensure_test_image() {  # busybox image imported from Debian's busybox-static (no registry here)
  apt_install busybox:busybox-static
  (cd "$CTXPOOL_ROOT" && python3 -c 'from tests.support import docker_client, build_test_image; print(build_test_image(docker_client()))' >/dev/null)
}
