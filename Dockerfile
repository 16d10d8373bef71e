# syntax=docker/dockerfile:1
#
# PickMyClass: one image for every service; the command picks the service.
#
#   docker build -t pickmyclass .                       # production image (default = last stage)
#   docker run pickmyclass                              # the gateway (port 8000)
#   docker run pickmyclass python -m services.scraper   # any other service
#   docker run pickmyclass python -m shared.setup       # migrations + JetStream streams/consumers
#
#   docker build --target dev -t pickmyclass-devtools . # + devtools/ (catalog simulator, Resend fake)
#
# The production stages copy only pyproject.toml, shared/ and services/ and install the package without
# the `dev` extra (pyproject's package list is shared* and services*), so devtools/ and the test tools
# never reach the production image. Only the `dev` stage copies devtools/.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
# Fixed numeric ids so Kubernetes can enforce runAsNonRoot (runAsUser: 10001).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

# ---------------------------------------------------------------------------------------------------------
FROM base AS builder
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when pyproject.toml changes): the runtime list only,
# never [project.optional-dependencies].
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY shared ./shared
COPY services ./services
COPY pmc ./pmc
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && pip check \
 && python -m compileall -q /opt/venv

# ---------------------------------------------------------------------------------------------------------
# Development-only image for compose: the production environment plus devtools/
# (`python -m devtools.catalog_sim`, `python -m devtools.resend_fake`). Never deploy it.
FROM base AS dev
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    LOG_FORMAT=console
WORKDIR /app
COPY devtools ./devtools
USER 10001:10001
CMD ["python", "-m", "devtools.catalog_sim", "--host", "0.0.0.0", "--port", "8001", "--demo"]

# ---------------------------------------------------------------------------------------------------------
# Production image (the default target: keep it last).
FROM base AS runtime
# Debian's Chromium for the scraper's class-list page fallback (Playwright cannot download its own here);
# CHROMIUM_PATH points at it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-liberation \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    LOG_FORMAT=json \
    GATEWAY_PORT=8000 \
    GATEWAY_HOST=0.0.0.0 \
    CHROMIUM_PATH=/usr/bin/chromium
# Empty working directory: the code lives in the venv's site-packages, owned by root and read-only to
# the app user; the root filesystem can be mounted read-only (Kubernetes mounts an emptyDir on /tmp).
WORKDIR /app
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.gateway"]
