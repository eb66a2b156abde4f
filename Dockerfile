# The opsledger image: `opsledger serve` on port 8000, needing no network at run time.
#
#   docker build -t opsledger:0.1.0 .
#
# Needs BuildKit (the default builder since Docker 23; podman and buildah too) for the
# wheel mount below. The builder stage reaches PyPI, or the index that
# `--build-arg PIP_INDEX_URL=...` names; the final stage installs from those wheels only.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY store/ store/
COPY ingest/ ingest/
COPY analytics/ analytics/
COPY api/ api/
COPY migrations/ migrations/
# The project's wheel and one for every dependency (tzdata among them: zoneinfo data that
# does not depend on the OS image).
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="opsledger" \
      org.opencontainers.image.description="Event-sourced incident and capacity analytics for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/opsledger/bin:$PATH \
    OPSLEDGER_HOME=/var/lib/opsledger
# A fixed uid/gid, so that Kubernetes' runAsNonRoot can check it and fsGroup can match it.
RUN groupadd --system --gid 10001 opsledger \
    && useradd --system --uid 10001 --gid opsledger --home-dir /var/lib/opsledger \
       --no-create-home --shell /usr/sbin/nologin opsledger \
    && install -d -o opsledger -g opsledger -m 0750 /var/lib/opsledger
# From the builder's wheels only: no index, so nothing is fetched here or later. pip compiles
# the bytecode now, as root, so a read-only root file system is fine at run time. DuckDB
# extensions are never downloaded: the read model turns autoinstall and autoload off.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/opsledger \
    && /opt/opsledger/bin/pip install --no-index --find-links /wheels opsledger \
    && /opt/opsledger/bin/opsledger --help >/dev/null
USER 10001:10001
WORKDIR /var/lib/opsledger
EXPOSE 8000
ENTRYPOINT ["opsledger"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
