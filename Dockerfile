# The laion-assets image for the Kubernetes code location (deploy/helm/values.yaml runs it with
# `dagster api grpc -m laion_assets.definitions_k8s`; its runs and step pods use the same image).
# NOT built where it was written (no docker there). Build and push it yourself:
#   docker build -t <registry>/laion-assets:0.1.0 . && docker push <registry>/laion-assets:0.1.0
#
# The CUDA runtime base gives the GPU step pods NVIDIA's container setup; torch 2.14.1 comes from PyPI's default index
# (https://pypi.org/simple), whose Linux x86_64 torch wheels are CUDA builds that bring their CUDA libraries as
# nvidia-* wheels; the node needs only a driver new enough for them. Python 3.11 (requires-python) is Ubuntu
# 22.04's python3.11 package.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv

# The project folder: the package finds its shipped files (predictors.yaml, the small LAION predictor heads in
# data/models) next to itself, so it is installed editable from here, with the pinned stack of pyproject.toml.
WORKDIR /opt/laion-assets
COPY pyproject.toml README.md LICENSE predictors.yaml dagster.yaml workspace.yaml ./
COPY laion_assets ./laion_assets
COPY data/models ./data/models
COPY data/reference ./data/reference
RUN pip install --index-url https://pypi.org/simple -e '.[images,hub,captions,cluster]'

# No CLIP/LLaVA weights baked in: the Hugging Face cache and model weights are a volume mounted at /models
# (deploy/helm/values.yaml), found through HF_HOME. DAGSTER_HOME is the chart's; data goes to LAION_ASSETS_DATA_ROOT.
ENV HF_HOME=/models/hf \
    DAGSTER_HOME=/opt/dagster/dagster_home

# A non-root user; it owns only the Dagster home (the data root is an s3:// URL, the models volume is read-only).
RUN useradd --create-home --uid 10001 laion \
    && mkdir -p /opt/dagster/dagster_home /models \
    && chown laion /opt/dagster/dagster_home
USER 10001

EXPOSE 3030
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "laion_assets.definitions_k8s"]
