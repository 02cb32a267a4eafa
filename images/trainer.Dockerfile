# kdflow CUDA trainer image: the GPU steps (teacher_train, teacher_eval, distill).
# Build from the repository root: kdflow images build (or docker build -f images/trainer.Dockerfile .).
# PyTorch's default Linux wheels bundle CUDA and cuDNN as pip packages, so the base needs no CUDA toolkit:
# only the host's NVIDIA driver, which the NVIDIA container toolkit (docker run --gpus, or the Kubernetes
# device plugin) mounts into the container.
# BASE_IMAGE: any Debian-like image with python3 (3.10+) and its venv module; swap it for air-gapped builds.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Empty: the default pip index's torch, built for CUDA; or a CUDA wheel index of PyTorch's to pick the CUDA version.
ARG TORCH_INDEX_URL=
ARG KDFLOW_VERSION=dev
LABEL org.opencontainers.image.title="kdflow-trainer" org.opencontainers.image.version="${KDFLOW_VERSION}"

ENV PATH=/opt/kdflow/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/huggingface HF_HUB_DISABLE_TELEMETRY=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The pinned dependencies first, in their own layer: a code change rebuilds only the small layer below.
COPY images/requirements.txt /opt/kdflow-src/images/
RUN python3 -m venv /opt/kdflow \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        --requirement /opt/kdflow-src/images/requirements.txt

COPY pyproject.toml README.md /opt/kdflow-src/
COPY components /opt/kdflow-src/components
COPY pipelines /opt/kdflow-src/pipelines
# The benchmarks (kdflow.pipelines.bench) are for a source checkout, not for the steps. setuptools refuses a
# declared package missing from the build context, so they are removed, installed and source copy, right
# after the install: the installed copy never reaches a layer.
RUN pip install --no-deps /opt/kdflow-src \
    && rm -r /opt/kdflow/lib/python3*/site-packages/kdflow/pipelines/bench /opt/kdflow-src/pipelines/bench \
    && useradd --create-home --uid 1000 kdflow

# A numeric user, so that Kubernetes' runAsNonRoot can check it.
USER 1000:1000
WORKDIR /home/kdflow
