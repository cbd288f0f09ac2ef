# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then run as a non-root user on a slim image.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
RUN groupadd --system quasar && useradd --system --gid quasar --home-dir /srv/quasar quasar
WORKDIR /srv/quasar
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY topics ./topics
COPY schemas ./schemas
COPY connectors ./connectors
USER quasar
ENV QUASAR_GATEWAY_HOST=0.0.0.0 \
    QUASAR_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080 9091
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os,urllib.request,sys; p=os.environ.get('QUASAR_HEALTH_URL','http://127.0.0.1:8080/healthz'); sys.exit(0 if urllib.request.urlopen(p, timeout=2).status == 200 else 1)"
ENTRYPOINT ["quasar"]
CMD ["gateway"]
