"""Online experiments: layered, hash-based assignment of users to arms, configured in YAML and validated at start-up.

A layer splits its traffic into 10,000 buckets by sha256("<layer salt>:<user_key>"); each experiment of the layer
owns a range [start, end) of buckets, so experiments in one layer never share a user, while different salts make the
layers independent of each other. Inside an experiment a second hash, sha256("<experiment>:<user_key>"), picks the
arm by cumulative weight, so the arm split does not depend on which bucket range the experiment owns.
Both hashes are sha256 (never Python's salted `hash()`): a user gets the same arms in every process and every restart.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

N_BUCKETS = 10_000
DEFAULT_EXPERIMENTS_PATH = Path(__file__).resolve().parent.parent / "conf" / "experiments.yaml"

# Names end up in the decision log (JSON keys) and in readout tables and file names: keep them plain.
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
Surface = Annotated[str, StringConstraints(min_length=1, max_length=64)]
_TWO_TO_64 = float(2**64)


class ExperimentsConfigError(ValueError):
    """An experiments file that cannot be read, parsed or validated; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArmOverrides(_Strict):
    """What an arm changes in the policy; unset values keep the service defaults."""

    # Frozen: one instance per arm is shared by every Assignment the assigner hands out.
    model_config = ConfigDict(extra="forbid", frozen=True)

    holdout: bool = Field(default=False, description="Serve the surface's neutral action instead of the policy.")
    epsilon: float | None = Field(
        default=None, ge=0.0, le=1.0, allow_inf_nan=False, description="Exploration share for this arm."
    )
    uncertainty_bonus: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    diversity_penalty: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)


class Arm(_Strict):
    """One arm of an experiment: its share of the experiment's users (relative weight) and its overrides."""

    name: Name
    weight: float = Field(gt=0.0, allow_inf_nan=False)
    overrides: ArmOverrides = Field(default_factory=ArmOverrides)


class Experiment(_Strict):
    """An experiment: the layer buckets it owns, the surfaces it applies to (None: all) and its arms."""

    name: Name
    buckets: tuple[int, int] = Field(description=f"[start, end) of the layer's {N_BUCKETS:,} buckets.")
    surfaces: list[Surface] | None = Field(default=None, min_length=1, description="None: every surface.")
    arms: list[Arm] = Field(min_length=2)
    control_arm: str | None = Field(default=None, description="The arm the others are compared to; default: first.")

    @field_validator("buckets")
    @classmethod
    def _buckets_in_range(cls, buckets: tuple[int, int]) -> tuple[int, int]:
        start, end = buckets
        if not 0 <= start < end <= N_BUCKETS:
            raise ValueError(f"buckets [{start}, {end}) must satisfy 0 <= start < end <= {N_BUCKETS}")
        return buckets

    @model_validator(mode="after")
    def _arms_and_control(self) -> Experiment:
        names = [arm.name for arm in self.arms]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"experiment {self.name!r}: arm names must be unique; repeated: {duplicates}")
        if self.control_arm is None:
            self.control_arm = names[0]
        elif self.control_arm not in names:
            raise ValueError(
                f"experiment {self.name!r}: control_arm {self.control_arm!r} is not one of its arms {names}"
            )
        return self

    @property
    def share(self) -> float:
        """Fraction of the layer's traffic that enters this experiment."""
        return (self.buckets[1] - self.buckets[0]) / N_BUCKETS


class Layer(_Strict):
    """Mutually exclusive experiments: each owns a disjoint bucket range of this layer's hash."""

    name: Name
    salt: str | None = Field(default=None, min_length=1, description="Hash salt; default: the layer name.")
    experiments: list[Experiment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ranges_disjoint(self) -> Layer:
        if self.salt is None:
            self.salt = self.name
        ordered = sorted(self.experiments, key=lambda e: e.buckets)
        for before, after in zip(ordered, ordered[1:]):
            if after.buckets[0] < before.buckets[1]:
                raise ValueError(
                    f"layer {self.name!r}: experiments {before.name!r} buckets {list(before.buckets)} and "
                    f"{after.name!r} buckets {list(after.buckets)} overlap; ranges in one layer must be disjoint"
                )
        return self


class ExperimentsConfig(_Strict):
    """All layers; experiment names are unique across layers (they key the decision log and the readout)."""

    layers: list[Layer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentsConfig:
        _refuse_repeats("layer names", [layer.name for layer in self.layers])
        # Two layers with one salt would bucket every user identically: they would not be independent.
        _refuse_repeats("layer salts", [layer.salt for layer in self.layers])
        names = [e.name for layer in self.layers for e in layer.experiments]
        _refuse_repeats("experiment names (across layers)", names)
        return self

    def control_arms(self) -> dict[str, str]:
        """Experiment name → its control arm, as the readout needs it."""
        # control_arm is always set after validation (first arm by default)
        return {e.name: str(e.control_arm) for layer in self.layers for e in layer.experiments}


def _refuse_repeats(what: str, names: Sequence[str | None]) -> None:
    duplicates = sorted({str(name) for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{what} must be unique; repeated: {duplicates}")


def load_experiments(path: Path | str) -> ExperimentsConfig:
    """Read and validate an experiments YAML file; any problem raises ExperimentsConfigError naming file and field."""
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ExperimentsConfigError(f"{path}: cannot read the experiments file: {error}") from error
    except yaml.YAMLError as error:
        raise ExperimentsConfigError(f"{path}: not valid YAML: {error}") from error
    if raw is None:
        raw = {}  # an empty file means "no experiments"
    if not isinstance(raw, dict):
        raise ExperimentsConfigError(
            f"{path}: the top level must be a mapping with a 'layers' list; got {type(raw).__name__}"
        )
    try:
        return ExperimentsConfig.model_validate(raw)
    except ValidationError as error:
        problems = "\n".join(f"  {_location(e['loc'])}: {e['msg']}" for e in error.errors())
        raise ExperimentsConfigError(f"{path}: invalid experiments config:\n{problems}") from error


def _location(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc as a readable path, e.g. layers[0].experiments[1].buckets."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


@dataclass(frozen=True)
class Assignment:
    """The arm a user is in for one experiment, and what that arm changes."""

    experiment: str
    arm: str
    overrides: ArmOverrides


@dataclass(frozen=True)
class _CompiledExperiment:
    prefix: bytes  # b"<experiment>:"
    surfaces: frozenset[str] | None
    cumulative: tuple[float, ...]  # cumulative weights / total, last one 1.0
    assignments: tuple[Assignment, ...]  # one per arm, built once and shared by every request


@dataclass(frozen=True)
class _CompiledLayer:
    prefix: bytes  # b"<salt>:"
    experiment_of_bucket: tuple[_CompiledExperiment | None, ...]  # N_BUCKETS entries


def _unit_hash(prefix: bytes, key: bytes) -> int:
    """First 8 bytes of sha256(prefix + key) as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(prefix + key).digest()[:8], "big")


def bucket(salt: str, user_key: str) -> int:
    """The layer bucket (0..N_BUCKETS-1) of a user under a layer salt."""
    return _unit_hash(f"{salt}:".encode(), user_key.encode()) % N_BUCKETS


class ExperimentAssigner:
    """Assigns a user to at most one experiment arm per layer; all lookups are precomputed from the config."""

    def __init__(self, config: ExperimentsConfig):
        self.config = config
        self._layers = tuple(_compile_layer(layer) for layer in config.layers)

    def assign(self, user_key: str, surface: str) -> list[Assignment]:
        """The user's arms on this surface, at most one per layer (none where their bucket is unused)."""
        key = user_key.encode()
        found: list[Assignment] = []
        for layer in self._layers:
            experiment = layer.experiment_of_bucket[_unit_hash(layer.prefix, key) % N_BUCKETS]
            if experiment is None or (experiment.surfaces is not None and surface not in experiment.surfaces):
                continue
            u = _unit_hash(experiment.prefix, key) / _TWO_TO_64  # in [0, 1)
            arm = min(bisect.bisect_right(experiment.cumulative, u), len(experiment.assignments) - 1)
            found.append(experiment.assignments[arm])
        return found


def arms_by_experiment(assignments: list[Assignment]) -> dict[str, str]:
    """{experiment: arm}: what the decision log records and the readout groups by."""
    return {a.experiment: a.arm for a in assignments}


def _compile_layer(layer: Layer) -> _CompiledLayer:
    owners: list[_CompiledExperiment | None] = [None] * N_BUCKETS
    for experiment in layer.experiments:
        compiled = _compile_experiment(experiment)
        start, end = experiment.buckets
        owners[start:end] = [compiled] * (end - start)
    return _CompiledLayer(prefix=f"{layer.salt}:".encode(), experiment_of_bucket=tuple(owners))


def _compile_experiment(experiment: Experiment) -> _CompiledExperiment:
    total = math.fsum(arm.weight for arm in experiment.arms)
    running, cumulative = 0.0, []
    for arm in experiment.arms:
        running += arm.weight
        cumulative.append(running / total)
    cumulative[-1] = 1.0  # no rounding gap at the top: every u in [0, 1) lands in an arm
    return _CompiledExperiment(
        prefix=f"{experiment.name}:".encode(),
        surfaces=None if experiment.surfaces is None else frozenset(experiment.surfaces),
        cumulative=tuple(cumulative),
        assignments=tuple(Assignment(experiment.name, arm.name, arm.overrides) for arm in experiment.arms),
    )
