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

PODMAN_SOCK="${CTXPOOL_PODMAN_SOCK:-/run/ctxpool-podman.sock}"

_podman_service() {
  nohup podman system service --time=0 "unix://$PODMAN_SOCK" >"$STATE_DIR/podman.log" 2>&1 &
  for _ in $(seq 1 40); do
    curl -sf --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  say "podman system service did not come up; see $STATE_DIR/podman.log"
  return 1
}

ensure_podman() {  # Podman's Docker-compatible API on $PODMAN_SOCK (the engine matrix)
  apt_install curl:curl
  if ! command -v podman >/dev/null 2>&1 || ! dpkg -s catatonit >/dev/null 2>&1; then
    # with its recommends: a network stack (netavark, CNI plugins), slirp4netns, uidmap;
    # catatonit is the init a container with init=true needs
    say "installing podman"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman catatonit >/dev/null
  fi
  if curl -sf --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1; then return 0; fi
  local conf=/etc/containers/containers.conf.d/ctxpool-ulimits.conf
  if [ ! -f "$conf" ]; then
    # Podman asks runc for nofile/nproc limits above what this machine lets a process raise
    # ("error setting rlimit type 7: operation not permitted"): give containers the limits
    # the service itself has.
    _podman_service
    local pid nofile nproc
    pid="$(pgrep -f "podman system service --time=0 unix://$PODMAN_SOCK" | head -1)"
    nofile="$(awk '/Max open files/ {print $5}' "/proc/$pid/limits")"
    nproc="$(awk '/Max processes/ {print $4}' "/proc/$pid/limits")"
    kill "$pid"; sleep 0.5
    mkdir -p "$(dirname "$conf")"
    printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' \
      "$nofile" "$nofile" "$nproc" "$nproc" >"$conf"
  fi
  say "starting podman system service on $PODMAN_SOCK (log: $STATE_DIR/podman.log)"
  _podman_service
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

ensure_promtool() {  # promtool checks deploy/prometheus (config, rules and their unit tests)
  command -v promtool >/dev/null 2>&1 && return 0
  # Debian ships promtool only with the server: install it without starting the service
  # (a policy-rc.d that denies every start, for this install only, unless one exists)
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  apt_install promtool:prometheus || { [ "$added" -eq 1 ] && rm -f "$policy"; return 1; }
  [ "$added" -eq 1 ] && rm -f "$policy"
  return 0
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

ensure_compose() {  # docker-compose (Debian's 1.29) and debootstrap, for the compose test
  apt_install docker-compose:docker-compose debootstrap:debootstrap
  # Debian's docker-compose runs on /usr/bin/python3 with Debian's python3-docker; a newer
  # docker-py pip-installed into that Python breaks it: say so plainly.
  docker-compose version >/dev/null 2>&1 || {
    say "docker-compose is installed but does not run:"; docker-compose version >&2; return 1; }
}

ensure_test_image() {  # busybox image imported from Debian's busybox-static (no registry here)
  apt_install busybox:busybox-static
  (cd "$CTXPOOL_ROOT" && python3 -c 'from tests.support import docker_client, build_test_image; print(build_test_image(docker_client()))' >/dev/null)
}
