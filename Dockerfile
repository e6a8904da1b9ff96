# syntax=docker/dockerfile:1
# PMR images, one Dockerfile, two runtime targets:
#   cpu      web and CPU workers   (docker build --target cpu -t pmr:cpu .)
#   cuda     GPU workers           (docker build --target cuda -t pmr:cuda .)
# Both run as the unprivileged user "pmr"; model weights go to the /app/weights volume,
# fetched on first start (or at build time with --build-arg FETCH_WEIGHTS=1).

ARG PYTHON_VERSION=3.11

# --- CPU: a virtual environment with the pinned requirements --------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt requirements-nodeps.txt /tmp/
# torch comes from PyTorch's index (the CPU build here, a CUDA build below), the rest from PyPI.
RUN /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-deps -r /tmp/requirements-nodeps.txt

# --- runtime, CPU: web processes and CPU workers ------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu
ARG FETCH_WEIGHTS=0
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PMR_VAR_DIR=/app/var MEDIA_ROOT=/app/media WEIGHTS_DIR=/app/weights STATIC_ROOT=/app/static \
    BIND=0.0.0.0
RUN apt-get update && apt-get install -y --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 pmr \
    && mkdir -p /app/var /app/media /app/weights /app/static && chown -R pmr:pmr /app
COPY --from=build-cpu /opt/venv /opt/venv
WORKDIR /app
COPY --chown=pmr:pmr . /app
USER pmr
RUN python manage.py collectstatic --noinput --verbosity 0 \
    && if [ "$FETCH_WEIGHTS" = "1" ]; then python manage.py fetch_weights --quiet; fi
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]

# --- CUDA: Python 3.11 on NVIDIA's CUDA runtime image, for GPU workers -----------------------------
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 AS cuda-base
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl libgomp1 \
    && apt-get purge -y software-properties-common && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

FROM cuda-base AS build-cuda
ARG TORCH_CUDA_INDEX_URL=https://download.pytorch.org/whl/cu126
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /opt/venv
COPY requirements.txt requirements-nodeps.txt /tmp/
RUN /opt/venv/bin/pip install --extra-index-url "${TORCH_CUDA_INDEX_URL}" -r /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-deps -r /tmp/requirements-nodeps.txt

FROM cuda-base AS cuda
ARG FETCH_WEIGHTS=0
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PMR_VAR_DIR=/app/var MEDIA_ROOT=/app/media WEIGHTS_DIR=/app/weights STATIC_ROOT=/app/static \
    BIND=0.0.0.0 \
    DETECTOR_DEVICE=cuda
RUN useradd --create-home --uid 10001 pmr \
    && mkdir -p /app/var /app/media /app/weights /app/static && chown -R pmr:pmr /app
COPY --from=build-cuda /opt/venv /opt/venv
WORKDIR /app
COPY --chown=pmr:pmr . /app
USER pmr
RUN if [ "$FETCH_WEIGHTS" = "1" ]; then python manage.py fetch_weights --quiet; fi
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD python /app/docker/worker_health.py || exit 1
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["worker"]
