#!/usr/bin/env bash
# Run the ctxpool stack: a local Redis (unless CTXPOOL_BROKER_URL/CTXPOOL_REDIS_URL point
# elsewhere), the Docker engine, one worker node, and, when CTXPOOL_DRP_URL is set, the DRP
# bridge (`ctxpool bridge`, in the background, log in $CTXPOOL_STATE_DIR/bridge.log) and the
# metrics exporter on :9808 (CTXPOOL_METRICS_PORT; 0 = none). Extra arguments go to
# `celery worker`, e.g. `scripts/run.sh -Q tag-ci`. Without -Q the node serves CTXPOOL_TAGS.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

ensure_docker
if [ -z "${CTXPOOL_BROKER_URL:-}${CTXPOOL_REDIS_URL:-}" ]; then
  ensure_redis
fi
ensure_python

cd "$CTXPOOL_ROOT"
if [ -n "${CTXPOOL_DRP_URL:-}" ]; then
  say "starting the DRP bridge for $CTXPOOL_DRP_URL (log: $STATE_DIR/bridge.log)"
  nohup ctxpool bridge >"$STATE_DIR/bridge.log" 2>&1 &
fi
if [ "${CTXPOOL_METRICS_PORT:-9808}" != "0" ]; then
  say "metrics on :${CTXPOOL_METRICS_PORT:-9808}/metrics"
  nohup ctxpool metrics --port "${CTXPOOL_METRICS_PORT:-9808}" >"$STATE_DIR/metrics.log" 2>&1 &
fi
say "starting node ${CTXPOOL_NODE_NAME:-$(hostname)}; inspect with: ctxpool nodes / ctxpool contexts"
exec celery -A pool worker --pool threads --concurrency "${CTXPOOL_CONCURRENCY:-8}" \
  --loglevel "${CTXPOOL_LOG_LEVEL:-info}" -n "${CTXPOOL_NODE_NAME:-$(hostname)}@%h" "$@"
