# sesender: slim, non-root (numeric UID), signals reach trio (exec-form entry), database on a volume.
#
# The base image is pinned to an exact Python patch release and Debian release, so a rebuild gets
# the same interpreter; raise it deliberately (and add "@sha256:<digest>" to pin the very bytes).
# The dependencies are installed in their own layer, from pyproject.toml alone, before the source
# is copied: editing the code rebuilds only the last, small layer.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml ./
# The runtime dependencies and the build backend, read from pyproject.toml (no lock file to drift).
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['project']['dependencies'] + p['build-system']['requires']))" \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY README.md ./
COPY actors ./actors
COPY sesender ./sesender
# Only sesender itself: every dependency is already in the layer above.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation .

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    DATABASE_PATH=/data/sesender.db \
    OUTBOX_DIR=/data/outbox \
    SERVER_HOST=0.0.0.0 \
    SERVER_PORT=3000
# A numeric user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 sesender \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin sesender \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SERVER_PORT', '3000'), timeout=2); sys.exit(0)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sesender"]
CMD ["serve"]
