# sesender: slim, non-root, signals reach trio (exec-form entry), database on a volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY actors ./actors
COPY sesender ./sesender
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_PATH=/data/sesender.db \
    OUTBOX_DIR=/data/outbox \
    SERVER_HOST=0.0.0.0 \
    SERVER_PORT=3000
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin sesender \
    && mkdir -p /data && chown sesender:sesender /data
USER sesender
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SERVER_PORT', '3000'), timeout=2); sys.exit(0)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sesender"]
CMD ["serve"]
