#!/usr/bin/env bash
# Build the images docker-compose.yml runs, with no container registry:
#   1. the base image the Dockerfile names (CTXPOOL_BASE_IMAGE, default ctxpool/base:bookworm):
#      Debian bookworm from this machine's Debian mirror (debootstrap, then docker import) with
#      python3 (3.11), python3-venv, redis-server and tini; kept while its recipe is unchanged;
#   2. wheels of ctxpool and its dependencies, built on this host (pip wheel) into
#      .build/wheels (the Docker build context holds nothing else); the dependency wheels are
#      cached under CTXPOOL_BUILD_CACHE (~/.cache/ctxpool-build) keyed by pyproject.toml;
#   3. the app image (CTXPOOL_IMAGE, default ctxpool/app:local: bridge, nodes, Flower,
#      exporter, simulator) and the Redis image (CTXPOOL_REDIS_IMAGE, ctxpool/redis:local),
#      both from the one Dockerfile, the wheels installed offline (--no-index);
#   4. the demo's context image (DEMO_CONTEXT_IMAGE, default ctxpool-demo/busybox:1), imported
#      from Debian's busybox-static when the engine lacks it.
# Each step says how long it took. Usage: scripts/compose-images.sh [base|wheels|images|demo]...
# (default: all four). Needs root (debootstrap) and a running Docker engine.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

BASE_IMAGE="${CTXPOOL_BASE_IMAGE:-ctxpool/base:bookworm}"
APP_IMAGE="${CTXPOOL_IMAGE:-ctxpool/app:local}"
REDIS_IMAGE="${CTXPOOL_REDIS_IMAGE:-ctxpool/redis:local}"
DEMO_IMAGE="${DEMO_CONTEXT_IMAGE:-ctxpool-demo/busybox:1}"
BUILD_CACHE="${CTXPOOL_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ctxpool-build}"
WHEELS="$CTXPOOL_ROOT/.build/wheels"
SUITE=bookworm
# python3 is 3.11 on bookworm, as the project wants; tini is PID 1 of every service
BASE_PACKAGES="python3,python3-venv,redis-server,ca-certificates,tini"
BASE_RECIPE=1  # bump when the recipe below changes in a way the key does not see

_t0=0
step_start() { _t0=$(date +%s%N); }
step_done() {
  local ds=$((($(date +%s%N) - _t0) / 100000000))
  say "$1 ($((ds / 10)).$((ds % 10)) s)"
}

debian_mirror() {  # the Debian mirror apt uses here (deb822 or one-line sources)
  if [ -n "${CTXPOOL_DEBIAN_MIRROR:-}" ]; then echo "$CTXPOOL_DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' \
    | grep -E '/debian/?$' | head -1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) {print $i; break}}' \
      | grep -E '/debian/?$' | head -1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

ensure_base() {
  apt_install debootstrap:debootstrap
  local mirror key have rootfs
  mirror="$(debian_mirror)"
  key=$(printf '%s\n' "$SUITE" "$mirror" "$BASE_PACKAGES" "$BASE_RECIPE" | sha256sum | cut -c1-16)
  have=$(docker image inspect -f '{{ index .Config.Labels "ctxpool.base-key" }}' "$BASE_IMAGE" \
    2>/dev/null || true)
  if [ "$have" = "$key" ]; then
    say "base image $BASE_IMAGE: present (key $key)"
    return 0
  fi
  step_start
  say "base image $BASE_IMAGE: debootstrap $SUITE from $mirror (+ $BASE_PACKAGES)"
  rootfs="$(mktemp -d /var/tmp/ctxpool-rootfs.XXXXXX)"
  # shellcheck disable=SC2064
  trap "rm -rf '$rootfs'" EXIT
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    >"$STATE_DIR/debootstrap.log" 2>&1 \
    || { tail -30 "$STATE_DIR/debootstrap.log" >&2; return 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change "LABEL ctxpool.base-key=$key" \
    --change "LABEL ctxpool.base-recipe=debootstrap-minbase-$SUITE" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  step_done "base image $BASE_IMAGE built (key $key)"
}

build_wheels() {  # .build/wheels/deps (cached by pyproject.toml) and .build/wheels/app
  local pyver src key deps
  pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$pyver" != "3.11" ]; then
    say "python3 here is $pyver; the image's is Debian's 3.11: the wheels would not fit"
    return 1
  fi
  step_start
  # build from the tracked and new files only (a stale build/ dir must not reach the image)
  src="$(mktemp -d /var/tmp/ctxpool-src.XXXXXX)"
  (cd "$CTXPOOL_ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - -c) \
    | tar -x -C "$src"
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS/app"
  # a fixed timestamp makes the wheel's bytes depend on its sources only: an unchanged tree
  # reuses the image's layers
  SOURCE_DATE_EPOCH=315532800 _pip wheel --no-deps -w "$WHEELS/app" "$src"
  rm -rf "$src"
  ls "$WHEELS"/app/ctxpool-*.whl >/dev/null
  # the dependency wheels depend on the declared dependencies and this platform only
  key=$(python3 - "$CTXPOOL_ROOT/pyproject.toml" <<'EOF_PY' | sha256sum | cut -c1-16
import sys, sysconfig, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(sorted(project["dependencies"]), project.get("requires-python"))
print(sysconfig.get_platform(), "%d.%d" % sys.version_info[:2])
EOF_PY
)
  deps="$BUILD_CACHE/deps-$key"
  if [ ! -f "$deps/.complete" ]; then
    say "wheels: dependencies of pyproject.toml (key $key) into $deps"
    rm -rf "$deps" "$deps.tmp"
    mkdir -p "$deps.tmp"
    _pip wheel -w "$deps.tmp" "$WHEELS"/app/ctxpool-*.whl
    rm -f "$deps.tmp"/ctxpool-*.whl
    _complete_for_image "$deps.tmp"
    touch "$deps.tmp/.complete"
    mv "$deps.tmp" "$deps"
  fi
  cp -al "$deps" "$WHEELS/deps" 2>/dev/null || { rm -rf "$WHEELS/deps"; cp -a "$deps" "$WHEELS/deps"; }
  step_done "wheels: $(find "$WHEELS/deps" -name '*.whl' | wc -l) dependencies + ctxpool in $WHEELS"
}

_pip() {  # pip on this host, quietly (this machine's pip config may print notices)
  local out rc=0
  out=$(python3 -m pip -q --disable-pip-version-check "$@" 2>&1) || rc=$?
  [ -z "$out" ] || grep -v -e 'is ignored: it is neither' <<<"$out" >&2 || true
  return "$rc"
}

_complete_for_image() {  # DIR: add what the image's Python needs that this host's does not
  # Environment markers are evaluated by the Python that resolves: this host's 3.11.x may
  # skip a dependency Debian's 3.11.2 needs (redis: async-timeout; python_full_version <
  # "3.11.3"). Resolve offline with the image's own pip and fetch what it misses.
  local dir="$1" out missing
  for _ in 1 2 3 4 5 6 7 8; do
    out=$(docker run --rm --network none -v "$dir:/wheels:ro" -v "$WHEELS/app:/app:ro" \
      "$BASE_IMAGE" sh -c 'python3 -m venv /tmp/v && /tmp/v/bin/pip install -q --dry-run \
        --disable-pip-version-check --no-index --find-links /wheels /app/*.whl' 2>&1) \
      && return 0
    missing=$(sed -n 's/.*No matching distribution found for \(.*\)$/\1/p' <<<"$out" | head -1)
    if [ -z "$missing" ]; then  # not a missing wheel: no base image, no engine, ...
      say "wheels: checking them with $BASE_IMAGE's Python failed (run the base step first?)"
      tail -20 <<<"$out" >&2
      return 1
    fi
    say "wheels: the image's Python also needs ${missing%%;*}"
    _pip download --no-deps --only-binary=:all: -d "$dir" "${missing%%;*}"
  done
  say "wheels: the image's Python still misses dependencies"
  return 1
}

build_images() {
  step_start
  local target image log="$STATE_DIR/docker-build.log"
  for target in redis app; do
    image=$APP_IMAGE
    [ "$target" = app ] || image=$REDIS_IMAGE
    (cd "$CTXPOOL_ROOT" && docker build --target "$target" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      -t "$image" .) >"$log" 2>&1 || { tail -30 "$log" >&2; return 1; }
  done
  step_done "images $APP_IMAGE and $REDIS_IMAGE built"
}

ensure_demo() {  # a busybox image (no agent inside: the nodes inject drpcli)
  if docker image inspect "$DEMO_IMAGE" >/dev/null 2>&1; then
    say "demo context image $DEMO_IMAGE: present"
    return 0
  fi
  apt_install busybox:busybox-static
  local root
  root="$(mktemp -d /var/tmp/ctxpool-busybox.XXXXXX)"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/usr/bin"
  chmod 1777 "$root/tmp"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in sh sleep env cat ls echo true false ps id wget date hostname mkdir rm; do
    ln -s busybox "$root/bin/$applet"
  done
  tar -C "$root" --numeric-owner -c . \
    | docker import --change 'CMD ["/bin/sleep", "2147483647"]' - "$DEMO_IMAGE" >/dev/null
  rm -rf "$root"
  say "demo context image $DEMO_IMAGE imported from busybox-static"
}

main() {
  ensure_docker
  local steps=("$@")
  [ "${#steps[@]}" -gt 0 ] || steps=(base wheels images demo)
  for s in "${steps[@]}"; do
    case "$s" in
      base) ensure_base ;;
      wheels) build_wheels ;;
      images) build_images ;;
      demo) ensure_demo ;;
      *) say "unknown step $s (base, wheels, images, demo)"; return 2 ;;
    esac
  done
}

main "$@"
