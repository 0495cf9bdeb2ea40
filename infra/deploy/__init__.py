"""The deployable stack: one image per service (docker/), a compose file for one host (compose.yaml), Kubernetes
manifests (k8s/), and the helpers the images run (`secrets_env`: secrets from files; `probe`: health checks).
`python -m infra.deploy.check` validates all of it statically (docs/deploy.md)."""
