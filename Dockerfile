# syntax=docker/dockerfile:1
# Multi-stage: build wheels for Quasar and its dependencies, then install them on a slim image that
# runs as a non-root user. No extras: the embedded dev broker (`quasar[embedded]`, 40 MB) stays out. Linted by hadolint in tests/ops/test_deploy_files.py.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
# A numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 quasar \
 && useradd --system --uid 10001 --gid 10001 --home-dir /srv/quasar --no-create-home quasar
WORKDIR /srv/quasar
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/* && rm -rf /wheels
COPY topics ./topics
COPY schemas ./schemas
COPY connectors ./connectors
USER 10001:10001
# 8080: gateway HTTP (data, admin, /health, /metrics); 9091: worker /metrics and /health.
ENV QUASAR_GATEWAY_HOST=0.0.0.0 \
    QUASAR_SCHEMAS_DIR=/srv/quasar/schemas \
    QUASAR_GATEWAY_PORT=8080 \
    QUASAR_WORKER_METRICS_PORT=9091 \
    QUASAR_WORKER_METRICS_HOST=0.0.0.0 \
    QUASAR_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080 9091
# Liveness of whichever process runs: the gateway's /healthz by default; the worker sets
# QUASAR_HEALTH_URL to its ops port (compose.yml does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request; u=os.environ.get('QUASAR_HEALTH_URL','http://127.0.0.1:8080/healthz'); sys.exit(0 if urllib.request.urlopen(u, timeout=2).status == 200 else 1)"]
ENTRYPOINT ["quasar"]
CMD ["gateway"]
