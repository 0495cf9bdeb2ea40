"""The deployable stack, checked without building or running it: the Dockerfiles lint (hadolint and the project's
rules), compose.yaml and the Kubernetes manifests validate against their schemas, and the two describe the same
services (commands, variables, probes, shutdown budget, image tags)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from infra.deploy import check, secrets_env
from serving.api.routes import health
from tests.infra.deploy import stack

VERSION = tomllib.loads((check.REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
DOCKERFILES = sorted(check.DOCKER_DIR.glob("*.Dockerfile"))


def k8s_containers() -> dict[str, tuple[dict, dict]]:
    """{container name: (container, its workload resource)} of every workload in the manifests."""
    return {c["name"]: (c, doc) for _, doc in check.manifest_documents() for c in check.containers(doc)}


def k8s_resource(kind: str, name: str) -> dict:
    return next(doc for _, doc in check.manifest_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def test_the_four_service_images_have_a_dockerfile_each():
    assert [p.name for p in DOCKERFILES] == [
        "dagster-code.Dockerfile", "dagster.Dockerfile", "decision-service.Dockerfile", "mlflow.Dockerfile"]


def test_hadolint_finds_nothing_in_the_shipped_dockerfiles():
    assert check.hadolint_problems(DOCKERFILES) == []


def test_hadolint_reports_what_it_finds(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\nCMD python app.py\n")
    found = "\n".join(check.hadolint_problems([bad]))
    assert "DL3007" in found and "DL3008" in found and "DL3025" in found


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_each_dockerfile_keeps_the_project_rules(path):
    assert check.dockerfile_problems(path) == []


def test_the_project_rules_name_each_broken_one(tmp_path):
    (tmp_path / "present").mkdir()
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text(
        "FROM python:3.11-slim AS builder\nCOPY present absent /app/\n"
        "FROM python:3.11.14-slim\nCOPY --from=builder /app /app\n"
        'ENTRYPOINT ["python", "-m", "no_such_module_here"]\nCMD ["uvicorn", "nowhere.at_all:app"]\n'
    )
    assert check.dockerfile_problems(bad, context=tmp_path) == [
        "bad.Dockerfile: base image 'python:3.11-slim' is not pinned to a full version (e.g. python:3.11.14-slim-bookworm)",
        f"bad.Dockerfile:2: COPY source 'absent' is not in the build context {tmp_path}",
        "bad.Dockerfile: the final stage runs as root; add `USER 10001:10001` (a user it creates)",
        "bad.Dockerfile: no HEALTHCHECK CMD [...] in the final stage",
        "bad.Dockerfile ENTRYPOINT+CMD: module 'no_such_module_here' is not importable",
        "bad.Dockerfile ENTRYPOINT+CMD: module 'nowhere.at_all' of 'nowhere.at_all:app' is not importable",
    ]


def test_images_run_as_a_non_root_user_through_the_secrets_and_launch_entry_points():
    for path in DOCKERFILES:
        config = check.image_config(path)
        assert config["user"] == "10001:10001", path.name
        assert config["entrypoint"] == [
            "python", "-m", "infra.deploy.secrets_env", "--", "python", "-m", "infra.launch", "--"], path.name


def test_compose_file_validates_against_the_compose_spec():
    assert check.compose_problems() == []


def test_compose_schema_errors_are_reported(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump({"servics": {}, "services": {"x": {"image": "nginx:latest", "restart": 3}}}))
    assert check.compose_problems(bad) == [
        "compose.yaml: (top): 'servics' does not match any of the regexes: '^x-'",
        "compose.yaml: services/x/restart: 3 is not of type 'string'",
    ]
    bad.write_text(yaml.safe_dump({"services": {"x": {"image": "nginx:latest", "volumes": ["./nope.conf:/etc/x"]}}}))
    assert check.compose_problems(bad) == [
        "compose.yaml: service x: image 'nginx:latest' is not pinned (no tag, or latest)",
        "compose.yaml: service x: bind-mounted './nope.conf' does not exist",
    ]


def test_manifests_validate_against_the_kubernetes_schemas_strictly():
    assert check.manifest_problems() == []


def test_manifest_errors_are_reported(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["app.yaml", "gone.yaml"]}))
    (tmp_path / "app.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
        "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "hyperlift/x"}]}}},
    }))
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": "n"}}))
    assert check.manifest_problems(tmp_path) == [
        "app.yaml: Deployment/app: spec: Additional properties are not allowed ('replica' was unexpected)",
        "app.yaml: Deployment/app: container c: image 'hyperlift/x' has no pinned tag",
        "kustomization.yaml: extra.yaml is not under resources (kubectl apply -k would skip it)",
        "kustomization.yaml: resource gone.yaml does not exist",
    ]


def test_the_check_command_passes_on_the_shipped_files(capsys):
    assert check.main() == 0
    assert capsys.readouterr().out.startswith("0 problem(s): 4 Dockerfiles, compose.yaml, ")


# -- compose and Kubernetes describe the same stack --------------------------------------------------------------

SAME_SERVICES = ["create-databases", "feast-apply", "dagster-code", "dagster-webserver", "dagster-daemon", "mlflow",
                 "decision-service"]


def _k8s_argv(container: dict) -> list[str]:
    image = container["image"].split(":")[0].removeprefix("hyperlift/")
    config = check.image_config(check.DOCKER_DIR / f"{image}.Dockerfile")
    return [*container.get("command", config["entrypoint"]), *container.get("args", config["cmd"])]


@pytest.mark.parametrize("name", SAME_SERVICES)
def test_each_kubernetes_container_runs_the_command_compose_runs(name):
    container, _ = k8s_containers()[name]
    assert _k8s_argv(container) == stack.container_argv(name)


@pytest.mark.parametrize("name", SAME_SERVICES)
def test_each_kubernetes_container_gets_the_variables_compose_gives(name):
    container, _ = k8s_containers()[name]
    config = k8s_resource("ConfigMap", "hyperlift-env")["data"]
    k8s = set(config) | {e["name"] for e in container.get("env", [])}
    compose = {k.removesuffix("_FILE") if k.removesuffix("_FILE") in secrets_env.SECRET_VARIABLES else k
               for k in stack.compose()["services"][name]["environment"]}  # a secret file there, a variable here
    assert k8s == compose


def test_every_compose_service_is_deployed_on_kubernetes_or_is_infrastructure():
    assert set(stack.compose()["services"]) - set(SAME_SERVICES) == {"postgres", "redis", "proxy", "backup"}
    assert set(k8s_containers()) == set(SAME_SERVICES)


def test_image_tags_are_the_project_version_everywhere():
    for name, service in stack.compose()["services"].items():
        if service["image"].startswith("hyperlift/"):
            assert service["image"].endswith(f":${{HYPERLIFT_TAG:-{VERSION}}}"), name
    for name, (container, _) in k8s_containers().items():
        assert container["image"].endswith(f":{VERSION}"), name
    kustomization = yaml.safe_load((check.K8S_DIR / "kustomization.yaml").read_text())
    assert {i["newTag"] for i in kustomization["images"]} == {VERSION}


def test_decision_service_probes_are_the_service_routes():
    routes = {route.path for route in health.router.routes}
    container, _ = k8s_containers()["decision-service"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert stack.healthcheck_argv("decision-service")[-1] == "http://127.0.0.1:8000/readyz"


def _graceful_shutdown_s(argv: list[str]) -> int:
    return int(argv[argv.index("--timeout-graceful-shutdown") + 1])


def test_a_stopping_decision_service_has_time_to_drain_its_log_before_it_is_killed():
    container, statefulset = k8s_containers()["decision-service"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    needed = pre_stop + _graceful_shutdown_s(container["args"]) + float(env["HYPERLIFT_SERVING_DECISION_LOG_CLOSE_S"])
    needed += 2.0  # TraceWriter.close joins its thread for timeout + 2 s
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed
    service = stack.compose()["services"]["decision-service"]
    compose_needed = _graceful_shutdown_s(service["command"]) + float(
        service["environment"]["HYPERLIFT_SERVING_DECISION_LOG_CLOSE_S"]) + 2.0
    assert int(service["stop_grace_period"].removesuffix("s")) >= compose_needed


def test_the_write_ahead_files_live_on_a_volume_that_outlives_the_pod():
    container, statefulset = k8s_containers()["decision-service"]
    assert statefulset["kind"] == "StatefulSet"
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenScaled": "Retain",
                                                                          "whenDeleted": "Retain"}
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == claim)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert Path(env["HYPERLIFT_SERVING_DECISION_WAL_DIR"]).parent == Path(mount)
    assert Path(env["HYPERLIFT_SERVING_SAFE_MODE_FILE"]).parent == Path(mount)
    service = stack.compose()["services"]["decision-service"]
    spill = next(v.split(":")[1] for v in service["volumes"] if v.startswith("decision-spill:"))
    assert Path(service["environment"]["HYPERLIFT_SERVING_DECISION_WAL_DIR"]).parent == Path(spill)


def test_autoscaler_and_disruption_budget_target_the_decision_service_pods():
    _, statefulset = k8s_containers()["decision-service"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    hpa = k8s_resource("HorizontalPodAutoscaler", "decision-service")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "decision-service"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = k8s_resource("PodDisruptionBudget", "decision-service")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container, _ = k8s_containers()["decision-service"]
    assert container["resources"]["requests"]["cpu"]  # utilization is a share of the request


def test_every_service_selects_pods_and_a_named_port_of_theirs():
    workloads = [doc for _, doc in check.manifest_documents() if check.containers(doc)]
    for _, service in check.manifest_documents():
        if service["kind"] != "Service":
            continue
        selected = [w for w in workloads
                    if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert selected, service["metadata"]["name"]
        ports = {p["name"] for w in selected for c in check.containers(w) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, service["metadata"]["name"]


def test_secrets_are_referenced_not_written():
    secret_keys = set(yaml.safe_load((check.K8S_DIR / "secret.example.yaml").read_text())["stringData"])
    for name, (container, workload) in k8s_containers().items():
        for variable in container.get("env", []):
            if "valueFrom" in variable:
                assert variable["valueFrom"]["secretKeyRef"]["key"] in secret_keys, name
    volumes = k8s_containers()["decision-service"][1]["spec"]["template"]["spec"]["volumes"]
    assert {"key": "api_keys.yaml", "path": "api_keys.yaml"} in next(v for v in volumes if "secret" in v)["secret"]["items"]
    assert "secret.example.yaml" not in yaml.safe_load((check.K8S_DIR / "kustomization.yaml").read_text())["resources"]


def test_the_proxy_sends_to_the_decision_service_replicas_on_their_port():
    conf = (check.DEPLOY_DIR / "nginx" / "nginx.conf").read_text()
    argv = stack.compose()["services"]["decision-service"]["command"]
    port = argv[argv.index("--port") + 1]
    assert re.search(rf"server decision-service:{port} resolve", conf)
    assert "proxy_pass http://decision_service;" in conf
    proxy = stack.compose()["services"]["proxy"]
    assert proxy["ports"] == ["8000:8080"] and "listen 8080;" in conf


def test_the_workspace_reads_the_code_location_address_both_deployments_set():
    workspace = yaml.safe_load((check.DEPLOY_DIR / "dagster" / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] == {"env": "HYPERLIFT_DAGSTER_CODE_HOST"}
    assert server["port"] == {"env": "HYPERLIFT_DAGSTER_CODE_PORT"}
    config = k8s_resource("ConfigMap", "hyperlift-env")["data"]
    for env in (config, stack.compose()["services"]["dagster-webserver"]["environment"]):
        assert (env["HYPERLIFT_DAGSTER_CODE_HOST"], env["HYPERLIFT_DAGSTER_CODE_PORT"]) == ("dagster-code", "4000")
