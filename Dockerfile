# faceres web demo and CLI.
#   CPU:  docker build -t faceres .
#   CUDA: docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t faceres:cuda .
#   run:  docker run -p 7860:7860 -v faceres-weights:/home/faceres/.cache/faceres faceres
# Extra weights (GPEN, RetinaFace, ...) go in the mounted volume, or are downloaded into it on
# first use; the shipped default model is inside the image.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive \
    FACERES_WEIGHTS_DIR=/home/faceres/app/weights

# python3 for CUDA base images (the slim image already has it); libgl/libglib for OpenCV
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv libgl1 libglib2.0-0 curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 faceres
WORKDIR /home/faceres/app

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url ${TORCH_INDEX} "torch>=2.1,<=2.14.1" "torchvision>=0.16,<=0.29.1"

COPY pyproject.toml README.md ./
COPY faceres ./faceres
COPY weights ./weights
COPY app.py ./
RUN pip install ".[app]"

USER faceres
RUN mkdir -p /home/faceres/.cache/faceres
VOLUME ["/home/faceres/.cache/faceres"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD curl -fsS http://127.0.0.1:7860/ || exit 1
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
