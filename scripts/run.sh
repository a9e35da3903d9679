#!/usr/bin/env bash
# Run the ctxpool stack in the foreground: `ctxpool up` (see README "Run it"). Installs what is
# missing first (docker.io, busybox-static for the demo image, the project), starts dockerd,
# then `ctxpool up`: an embedded Redis (unless CTXPOOL_BROKER_URL/CTXPOOL_REDIS_URL are set),
# the DRP simulator with a demo (unless CTXPOOL_DRP_URL is set), one node, the bridge, Flower
# and the metrics exporter, with a live summary. Ctrl-C stops it all. Extra arguments go to
# `ctxpool up` (e.g. --clean).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

ensure_docker
apt_install busybox:busybox-static
ensure_python

cd "$CTXPOOL_ROOT"
exec ctxpool up "$@"
