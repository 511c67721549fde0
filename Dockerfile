# syntax=docker/dockerfile:1
#
# etcdagent container image.
#
#   docker build --build-arg VERSION=0.1.0 -t etcdagent:0.1.0 .
#   docker run --rm etcdagent:0.1.0 --version
#
# Two stages on the same slim Python 3.11 base: the builder turns the source into a wheel, the
# final stage installs only that wheel (and its dependencies from PyPI, all pure Python or
# manylinux wheels) into the venv /opt/etcdagent. No compiler, no source tree, no build tools
# end up in the image. tests/ship/test_wheel_install.py reproduces this install path without
# Docker (same build command, fresh venv, `pip install <wheel>`).
#
# User: the image runs as the unprivileged numeric UID/GID 65532 ("nonroot"), which is right
# for `etcdagent status`, the maintenance commands and any agent given certificates it can read
# (a Secret mounted with fsGroup 65532, a password file, plain HTTP in a lab).
# On a kubeadm control plane the agent uses kubeadm's etcd client certificate
# /etc/kubernetes/pki/etcd/healthcheck-client.key, which is owned by root with mode 0600 on
# the node: UID 65532 cannot read it (the agent exits 2 with "not readable by this user").
# The manifests in deploy/ (DaemonSet, CronJob, static pod) therefore override the user with
# `runAsUser: 0` for that one reason, and take every privilege away otherwise: all capabilities
# dropped (root without CAP_DAC_OVERRIDE reads only files it owns, i.e. the 0600 root-owned key),
# allowPrivilegeEscalation false, read-only root filesystem, RuntimeDefault seccomp, and only
# the three files it needs (ca.crt, healthcheck-client.crt/.key) mounted read-only, never the
# etcd CA key or the members' server/peer keys. To run as 65532 instead, issue the agent its own
# etcd client certificate into a Secret and drop the runAsUser override (see deploy/).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m pip install --no-cache-dir build==1.6.1

WORKDIR /src
# Exactly what the wheel is made of (see .dockerignore for what never enters the context).
COPY pyproject.toml README.md ./
COPY etcdagent ./etcdagent
RUN python -m build --wheel --outdir /dist .


FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
# Set to the real repository when publishing (docker build --build-arg SOURCE_URL=...).
ARG SOURCE_URL=https://github.com/etcdagent/etcdagent

LABEL org.opencontainers.image.title="etcdagent" \
      org.opencontainers.image.description="etcd maintenance and health agent: watches members, compacts with retention, defragments one member at a time." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/etcdagent \
    PATH=/opt/etcdagent/bin:$PATH

# The wheel is bind-mounted from the builder, so it never becomes a layer of this image.
# pip byte-compiles the installed modules, so nothing is written at run time
# (readOnlyRootFilesystem works).
RUN --mount=type=bind,from=builder,source=/dist,target=/tmp/dist \
    python -m venv /opt/etcdagent \
    && /opt/etcdagent/bin/pip install --no-cache-dir /tmp/dist/etcdagent-*.whl \
    && groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot \
    && etcdagent --version

USER 65532:65532
WORKDIR /

# /metrics, /healthz, /readyz (`--listen`, default 0.0.0.0:9479).
EXPOSE 9479

# No HEALTHCHECK: Kubernetes ignores it; the manifests probe /healthz and /readyz instead.
ENTRYPOINT ["etcdagent"]
CMD ["run"]
