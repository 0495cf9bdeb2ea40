# syntax=docker/dockerfile:1
# The Dagster code location: a gRPC server over dagster_project.definitions; runs launched by the daemon execute here.
# Build context: the repository root (docker build -f infra/deploy/docker/NAME.Dockerfile .). The builder stage is the
# same in every image of infra/deploy/docker, so one build fills the layer cache for all four.
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# The dependencies of pyproject.toml first, alone: this layer changes only when pyproject.toml does.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print(\"\\n\".join(tomllib.load(open(\"pyproject.toml\", \"rb\"))[\"project\"][\"dependencies\"]))" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt
# Then the project, installed editable: feature_store.yaml and the policy YAML files are read next to the code.
COPY infra infra
COPY simulator simulator
COPY feature_repo feature_repo
COPY dagster_project dagster_project
COPY training training
COPY serving serving
COPY demo demo
RUN pip install --no-cache-dir --no-deps -e . \
 && python -m compileall -q infra simulator feature_repo dagster_project training serving demo

FROM python:3.11.14-slim-bookworm
# One non-root user in every image; its home state lives on volumes mounted under /var/lib/hyperlift.
RUN groupadd --system --gid 10001 hyperlift \
 && useradd --system --uid 10001 --gid hyperlift --home-dir /var/lib/hyperlift --shell /usr/sbin/nologin hyperlift \
 && mkdir -p /var/lib/hyperlift/home /var/lib/hyperlift/spill /var/lib/hyperlift/backups \
 && chown -R hyperlift:hyperlift /var/lib/hyperlift
# pg_dump and pg_restore for `python -m infra.backup` on the cluster profile (compose's `backup` service). Debian's
# security updates replace exact versions, so the major is pinned by the package name (the server's major must not
# be newer: compose runs PostgreSQL 15).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HYPERLIFT_HOME=/var/lib/hyperlift/home \
    DAGSTER_HOME=/var/lib/hyperlift/home/dagster \
    GX_ANALYTICS_ENABLED=false
WORKDIR /app
USER 10001:10001
# Secrets from files (VAR_FILE), then the project environment (infra.launch: dagster.yaml of the profile, the
# resolved store URLs); the service command is CMD (compose `command:`, Kubernetes `args:`).
ENTRYPOINT ["python", "-m", "infra.deploy.secrets_env", "--", "python", "-m", "infra.launch", "--"]
EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
  CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "api", "grpc", "-m", "dagster_project.definitions", "-h", "0.0.0.0", "-p", "4000"]
