#!/usr/bin/env bash
# Run a ctxpool node: a local Redis (unless CTXPOOL_BROKER_URL/CTXPOOL_REDIS_URL point
# elsewhere), the Docker engine, and one worker node. Extra arguments go to `celery worker`,
# e.g. `scripts/run.sh -Q tag-ci`. Without -Q the node serves CTXPOOL_TAGS (default: default).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

ensure_docker
if [ -z "${CTXPOOL_BROKER_URL:-}${CTXPOOL_REDIS_URL:-}" ]; then
  ensure_redis
fi
ensure_python

cd "$CTXPOOL_ROOT"
say "starting node ${CTXPOOL_NODE_NAME:-$(hostname)}; inspect with: ctxpool nodes / ctxpool contexts"
exec celery -A pool worker --pool threads --concurrency "${CTXPOOL_CONCURRENCY:-8}" \
  --loglevel "${CTXPOOL_LOG_LEVEL:-info}" -n "${CTXPOOL_NODE_NAME:-$(hostname)}@%h" "$@"
