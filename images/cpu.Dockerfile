# kdflow CPU runtime image: every step that needs no GPU (data_prep, teacher_check, student_eval,
# onnx_export, publish), and all of them in a local run on a machine without GPUs.
# Build from the repository root: kdflow images build (or docker build -f images/cpu.Dockerfile .).
# BASE_IMAGE: any Debian-like image with python3 (3.10+) and its venv module; swap it for air-gapped builds.
# The default is pinned by digest, so a rebuilt tag cannot change the image unnoticed: the tag's multi-arch index
# (amd64 and arm64 alike). To update it, put the digest that `docker buildx imagetools inspect
# python:3.11-slim-bookworm` prints in both Dockerfiles (Renovate's Dockerfile manager can keep it current).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
FROM ${BASE_IMAGE}

# PyTorch's CPU wheels (a few hundred MB instead of the CUDA build's GBs). Empty: the indexes and find-links of the
# pip configuration (as in CI), which must serve a file whose hash images/torch-cpu.txt lists.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG KDFLOW_VERSION=dev
LABEL org.opencontainers.image.title="kdflow-cpu" org.opencontainers.image.version="${KDFLOW_VERSION}"

ENV PATH=/opt/kdflow/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/huggingface HF_HUB_DISABLE_TELEMETRY=1

# The locked dependencies first, in their own layer: a code change rebuilds only the small layer below.
# torch comes from this image's own lock (torch-cpu.txt), the rest from the shared one; pip checks every file's hash.
COPY images/requirements.txt images/torch-cpu.txt /opt/kdflow-src/images/
RUN python3 -m venv /opt/kdflow \
    && pip install --require-hashes ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        --requirement /opt/kdflow-src/images/torch-cpu.txt --requirement /opt/kdflow-src/images/requirements.txt

COPY pyproject.toml README.md /opt/kdflow-src/
COPY components /opt/kdflow-src/components
COPY pipelines /opt/kdflow-src/pipelines
# The benchmarks (kdflow.pipelines.bench) are for a source checkout, not for the steps. setuptools refuses a
# declared package missing from the build context, so they are removed, installed and source copy, right
# after the install: the installed copy never reaches a layer.
# Nothing downloaded, so nothing unchecked: no index, and the build uses the locked setuptools (no build isolation).
RUN pip install --no-deps --no-index --no-build-isolation /opt/kdflow-src \
    && rm -r /opt/kdflow/lib/python3*/site-packages/kdflow/pipelines/bench /opt/kdflow-src/pipelines/bench \
    && useradd --create-home --uid 1000 kdflow

# A numeric user, so that Kubernetes' runAsNonRoot can check it.
USER 1000:1000
WORKDIR /home/kdflow
