# One image for every Python service of docker-compose.yml (bridge, nodes, Flower, metrics
# exporter, DRP simulator) and one for Redis, both from BASE_IMAGE: Debian bookworm with
# python3 (3.11), python3-venv, redis-server and tini. No registry is needed:
# scripts/compose-images.sh builds the base image with debootstrap and the wheels on the host.
# The build context is .build/wheels only (.dockerignore); nothing secret is copied in.
ARG BASE_IMAGE=ctxpool/base:bookworm

# ---- Redis: Debian's redis-server as the package's own unprivileged user -----------------
FROM ${BASE_IMAGE} AS redis
RUN install -d -o redis -g redis -m 0750 /data
USER redis
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["redis-server", "--dir", "/data", "--appendonly", "yes", "--maxmemory-policy", "noeviction"]

# ---- the virtualenv, installed offline from wheels built on the host ---------------------
FROM ${BASE_IMAGE} AS venv
# dependencies first: this layer is reused while pyproject.toml is unchanged
COPY .build/wheels/deps/ /wheels/deps/
RUN python3 -m venv /opt/ctxpool \
 && /opt/ctxpool/bin/pip install --no-cache-dir --no-index --disable-pip-version-check \
        /wheels/deps/*.whl
COPY .build/wheels/app/ /wheels/app/
RUN /opt/ctxpool/bin/pip install --no-cache-dir --no-index --no-deps --disable-pip-version-check \
        /wheels/app/*.whl \
 && /opt/ctxpool/bin/pip check

# ---- the app: ctxpool, celery, flower; runs as uid 10001 unless the service says otherwise --
FROM ${BASE_IMAGE} AS app
ARG CTXPOOL_UID=10001
RUN groupadd --system --gid "${CTXPOOL_UID}" ctxpool \
 && useradd --system --uid "${CTXPOOL_UID}" --gid ctxpool --create-home \
        --home-dir /home/ctxpool --shell /usr/sbin/nologin ctxpool \
 && install -d -o ctxpool -g ctxpool -m 0750 /data
COPY --from=venv /opt/ctxpool /opt/ctxpool
ENV PATH=/opt/ctxpool/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER ctxpool
WORKDIR /home/ctxpool
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["ctxpool", "--help"]
