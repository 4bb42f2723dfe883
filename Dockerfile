# The tickscope sidecar's image: only the sidecar distribution (agent/ and exporters/,
# never shim/), in a venv on a slim Python base, run as a numeric non-root user.
#
#   make image      # tickscope:<version>, VERSION and SOURCE_URL from the project
#   docker build --build-arg VERSION=0.1.0 -t tickscope:0.1.0 .
#
# BASE is any Debian-like image with Python 3.11+ and its venv module: the official
# python:3.11-slim-bookworm (python in /usr/local/bin) or Debian's own python3 and
# python3-venv (in /usr/bin; tests/test_image.py builds on one made with debootstrap,
# scripts/build-base-image.sh). Both stages use the same BASE, so the venv's python
# symlink points at the interpreter the final stage has.
#
# Dependencies come from the package index (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and
# PIP_TRUSTED_HOST are build args for a mirror). Behind a TLS-intercepting proxy, pass
# its CA bundle as a build secret, which never reaches a layer:
#   --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt
# Only wheels are installed (--only-binary :all:): the final stage has no compiler, and
# a dependency without a wheel for the base's Python fails the build instead of
# compiling.
#
# At run time the sidecar writes nothing outside /tmp (a TLS web config's certificate
# and key go to a temporary directory there), so it runs with a read-only root
# filesystem; give it a writable /tmp (podman and docker --read-only mount a tmpfs
# there, Kubernetes needs an emptyDir). It handles SIGTERM itself (the event loop's
# signal handler) and exits 0 within server.shutdown_timeout (10s by default), so it
# runs as PID 1 without an init.

ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build

ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent/ agent/
COPY exporters/ exporters/

# One venv for building the wheel (hatchling), one for the sidecar: the second holds
# the sidecar's dependencies and nothing else (pip and setuptools removed, so the
# image has no installer either).
RUN --mount=type=secret,id=ca-certificates \
    set -eu; \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi; \
    python3 -m venv /opt/build-venv; \
    /opt/build-venv/bin/pip install --quiet --only-binary=:all: 'hatchling>=1.21'; \
    /opt/build-venv/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /wheels /src; \
    python3 -m venv /opt/tickscope; \
    /opt/tickscope/bin/pip install --quiet --only-binary=:all: /wheels/tickscope-*.whl; \
    /opt/tickscope/bin/pip uninstall --quiet --yes pip setuptools

# The version the labels claim (declared here, after the install, so that a new value
# does not invalidate the layers above): the build stops when the wheel's differs.
ARG VERSION=0.1.0
RUN installed="$(/opt/tickscope/bin/tickscope version)"; \
    if [ "$installed" != "tickscope ${VERSION}" ]; then \
        echo "error: the wheel is '$installed', VERSION is ${VERSION}: pass --build-arg VERSION=<pyproject's version>" >&2; \
        exit 1; \
    fi

FROM ${BASE}

ARG VERSION=0.1.0
ARG SOURCE_URL=https://git.example.com/tickscope/tickscope

LABEL org.opencontainers.image.title="tickscope" \
      org.opencontainers.image.description="Observability sidecar for ccxt trading engines: host, process and exchange-API metrics; OTLP in, Prometheus out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"

# -l: no lastlog/faillog entry (their sparse files grow with the uid).
RUN groupadd --gid 10001 tickscope \
    && useradd --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin tickscope

COPY --from=build /opt/tickscope /opt/tickscope
COPY container/tickscope.yaml /etc/tickscope/tickscope.yaml

ENV PATH=/opt/tickscope/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

USER 10001:10001

# 9464: the admin port (/metrics, /healthz, /readyz). 4317/4318: OTLP gRPC/HTTP,
# bound to 127.0.0.1 by the default config (the engine in the same pod sends there).
EXPOSE 9464 4317 4318

ENTRYPOINT ["tickscope"]
CMD ["run", "--config", "/etc/tickscope/tickscope.yaml"]
