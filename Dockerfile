# maxact server image: `docker build -t maxact .` then see compose.yaml.
# CPU onnxruntime (the `server` extra); for NVIDIA GPUs build from a CUDA base image and
# install `.[gpu]` instead (onnxruntime-gpu replaces onnxruntime).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the wheel is built from (see .dockerignore); nothing downloaded but PyPI packages.
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY proto ./proto
COPY server ./server
COPY client ./client
RUN pip install ".[server]" && rm -rf /build

# A non-root user owns the three volumes: models (uploads write here), datasets, scan store.
RUN useradd --system --uid 10001 --create-home --home-dir /home/maxact maxact \
    && mkdir -p /models /data /state \
    && chown maxact:maxact /models /data /state
USER maxact
WORKDIR /home/maxact

# Every `maxact serve` flag also reads MAXACT_<FLAG> (`python -m maxact.server --help`).
ENV MAXACT_HOST=0.0.0.0 \
    MAXACT_PORT=50051 \
    MAXACT_HEALTH_PORT=50052 \
    MAXACT_MODEL_ROOT=/models \
    MAXACT_DATA_ROOT=/data \
    MAXACT_STORE=/state/store.sqlite \
    MAXACT_DEVICE=cpu \
    MAXACT_LOG_FORMAT=json

VOLUME ["/models", "/data", "/state"]
EXPOSE 50051 50052

# grpc.health.v1 Check on the health process's port (MAXACT_HEALTH_PORT: answered by its own
# small process, never behind the server's work), with our own tiny module (no probe binary).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "maxact.server.healthcheck"]

ENTRYPOINT ["python", "-m", "maxact.server"]
