# syntax=docker/dockerfile:1
#
# The canvas-assets image. By default it serves the code location (a Dagster code server over
# gRPC on port 4000); the same image also runs the webserver, the daemon and every run, so a
# deployment has one image per release. See DEPLOYMENT.md.
#
#   docker build -t canvas-assets:$(git rev-parse --short HEAD) .
#
# No secret is ever built in: Canvas, warehouse, SQS and Dagster-storage credentials reach the
# containers as environment variables from the orchestrator's secret store at run time.

# Pin the base further by digest in your registry (python:3.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Third-party packages first, at the exact versions the test suite ran with (one cached layer).
COPY deploy/requirements.lock deploy/requirements.lock
RUN pip install --requirement deploy/requirements.lock
COPY pyproject.toml setup.cfg README.md ./
COPY canvas_assets canvas_assets
RUN pip install --no-deps . && pip check

FROM ${PYTHON_IMAGE}
# tini is PID 1: it forwards SIGTERM to Dagster and reaps the run processes a code server starts.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster \
       --shell /usr/sbin/nologin dagster \
    && mkdir -p /opt/dagster/dagster_home \
    && chown -R dagster:dagster /opt/dagster \
    # The embedded PostgreSQL is for `canvas-assets dev` only: its folder is not writable here,
    # so a container started without CANVAS_WAREHOUSE_URL fails loudly instead of writing the
    # warehouse to its own disk.
    && mkdir -p /opt/canvas-assets-no-local-state \
    && chmod 0555 /opt/canvas-assets-no-local-state
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CANVAS_ASSETS_HOME=/opt/canvas-assets-no-local-state \
    CANVAS_EMBEDDED_WAREHOUSE=false
USER 10001:10001
WORKDIR /opt/dagster
EXPOSE 4000
# ENTRYPOINT is only tini, so orchestrators that pass a whole command as arguments (the Helm
# chart's `dagster api grpc ...`, ECS and Kubernetes run workers) work unchanged.
ENTRYPOINT ["tini", "--"]
CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "4000", \
     "--module-name", "canvas_assets.definitions", "--location-name", "canvas_assets"]
