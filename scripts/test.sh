#!/usr/bin/env bash
# Run every check: ruff, mypy, import contracts, unit and integration tests (real Redis, real Docker engine,
# real worker subprocesses), then the integration tests again with RabbitMQ as the broker.
# Installs and starts what it needs. Set CTXPOOL_SKIP_RABBITMQ=1 to skip the RabbitMQ pass
# (not allowed under CI). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

ensure_docker
ensure_redis
ensure_python
ensure_test_image
ensure_podman  # the engine matrix: Podman's Docker-compatible API
ensure_promtool  # deploy/prometheus checks
ensure_compose  # docker-compose and debootstrap: tests/deploy builds and runs the compose stack
cd "$CTXPOOL_ROOT"

say "ruff"
ruff check .
ruff format --check .
say "mypy --strict"
mypy
say "lint-imports (layering contracts in pyproject.toml)"
lint-imports
python3 -c "import broker_bridge.main, sys; assert 'docker' not in sys.modules, 'the bridge loads docker-py'"
python3 -c "import pool.cli, sys; assert 'docker' not in sys.modules, 'the CLI loads docker-py'"

say "pytest (broker: Redis)"
python3 -m pytest -q -ra --durations=15 "$@"

if [ -n "${CI:-}" ] || [ -z "${CTXPOOL_SKIP_RABBITMQ:-}" ]; then
  ensure_rabbitmq
  say "pytest integration (broker: RabbitMQ; tests that use no broker ran above)"
  CTXPOOL_TEST_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//" \
    python3 -m pytest -q -ra --durations=10 -m "integration and not no_broker" tests/integration "$@"
fi
