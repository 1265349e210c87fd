# syntax=docker/dockerfile:1
#
# One image for the three services (suno-ingest, suno-processor, suno-archiver). The
# project is installed from /app, keeping /app/services beside /app/schemas, which the
# services read at run time. Build from the repository root:
#
#   docker build -t suno-midi-pipeline:0.1.0 .
#
# The base is pinned to an exact Python patch release and Debian release. Pin its digest
# too (python:3.11.17-slim-bookworm@sha256:...) once it has been pulled and inspected
# through your registry; a digest cannot be looked up from the machines this was written on.

FROM python:3.11.17-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install "uv==0.13.8"

WORKDIR /app

# Dependencies first, from the lock file alone, so code changes reuse this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

COPY schemas ./schemas
COPY services ./services
RUN uv sync --frozen --no-dev


FROM python:3.11.17-slim-bookworm AS runtime

# pip, setuptools and wheel are not needed to run the services.
RUN python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

# Owned by root and read-only to the service user; Kubernetes also mounts the root file
# system read-only and gives /tmp as the only writable place.
COPY --from=builder /app /app

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

WORKDIR /app
USER 10001:10001

# ingest, processor and archiver (health and metrics only for the last two), tracker,
# console.
EXPOSE 8080 8081 8082 8083 8084

CMD ["suno-ingest"]
