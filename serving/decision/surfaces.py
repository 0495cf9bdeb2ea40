"""Surfaces and regional policy bundles: configuration files, validated once at start-up.

A surface (`conf/surfaces/<name>.yaml`) says where decisions are shown and how they are made there: candidate
source, model and feature service, slate size, exploration, uncertainty bonus, diversity, frequency caps, campaign
budgets, per-segment deadlines and the neutral (fallback) action. A regional bundle (`conf/regions/<name>.yaml`)
holds the rules of one jurisdiction: which actions are allowed, which need consent, which features may not be used
without consent. The user's bundle is chosen from the user's `region_code` feature (the profile), never from the
request: a region the request names (`context.region`) may only make the rules stricter (`PolicyConfig.rules_for`).
Consent is read from the profile's features alone. No region is named in code.

Every file is validated with pydantic (unknown keys are errors); `load_policy_config` adds the cross-file checks
and raises `PolicyConfigError` naming the file and the field, so a bad deploy fails at start-up, not per request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serving.policy.budgets import Budget
from serving.policy.caps import CapRule
from serving.policy.exploration import Exploration

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


class PolicyConfigError(ValueError):
    """A surface or region file is invalid; the message names the file and what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class AnnItemsConfig(_Strict):
    """Item candidates from the ANN index over item vectors (serving/decision/items.py): the k items of highest
    inner product with the user's vector, searched with `ef_search`, from the index published under `index_dir`
    (relative to HYPERLIFT_HOME's data folder, or absolute), checked for a new version every `refresh_s` seconds."""

    k: int = Field(default=50, ge=1, le=1000)
    ef_search: int = Field(default=128, ge=1, le=4096)
    index_dir: str = Field(default="embeddings/items", min_length=1)
    refresh_s: float = Field(default=30.0, ge=0.0, description="0: never reload (tests, benches).")
    exclude_items: list[int] = Field(default_factory=list, description="Items never served here (e.g. unsellable).")
    popular_fallback: bool = Field(default=True, description="Users without a vector get the most popular items.")
    profile_service: str = Field(
        default="uplift_v1", min_length=1, description="The feature service holding the profile's region_code and "
        "consent features: the region bundles' rules and consent apply to items as to every action.",
    )
    rank_top: int | None = Field(
        default=None, ge=1, description="Only the best `rank_top` eligible candidates enter the draw and the decision "
        "record (None: all of them); k above it is headroom for exclusions and caps.",
    )


class ItemCapConfig(_Strict):
    """A per-item cap: each item at most `limit` shows to a user in any `window_s` seconds (decision/item_caps.py)."""

    name: str = Field(pattern=r"^[a-z0-9_\-]{1,64}$")
    window_s: int = Field(ge=1)
    limit: int = Field(ge=1)


class CandidateSource(_Strict):
    """Where a surface's candidate actions come from.

    model_actions: every action the model scores (optionally narrowed by `actions`); request: the caller must
    send `candidates` (and they must be actions the model knows); ann_items: items from the ANN index (`ann`).
    """

    source: Literal["model_actions", "request", "ann_items"] = "model_actions"
    actions: list[str] | None = Field(default=None, min_length=1, description="Allow-list within the source.")
    ann: AnnItemsConfig | None = Field(default=None, description="With source ann_items: the index and k.")

    @model_validator(mode="after")
    def _ann_with_ann_items(self) -> CandidateSource:
        if (self.source == "ann_items") != (self.ann is not None):
            raise ValueError("`ann` (k, ef_search, index_dir) goes with `source: ann_items`, and only with it")
        if self.source == "ann_items" and self.actions is not None:
            raise ValueError("an ann_items source takes no `actions`: its candidates are items (use ann.exclude_items)")
        return self


class ModelRef(_Strict):
    """The registered model a surface is scored with."""

    name: str = "hyperlift_uplift"
    alias: str = "champion"


class ExplorationConfig(_Strict):
    """Exploration of a surface (see serving.policy.exploration). thompson samples each candidate's score from
    N(μ, σ²), σ the model's per-user uncertainty of the action (its distilled bootstrap spread, else the holdout
    standard error of its average uplift), with `floor` as softmax's; leave `uncertainty_bonus` at 0 with it unless
    an optimistic Thompson sampling is meant (the bonus shifts μ before sampling)."""

    method: Literal["greedy", "epsilon_greedy", "softmax", "thompson"] = "epsilon_greedy"
    epsilon: float = Field(default=0.05, ge=0.0, le=1.0)
    temperature: float = Field(default=1.0, gt=0.0)
    floor: float = Field(default=0.0, ge=0.0, lt=1.0)

    def build(self, epsilon: float | None = None) -> Exploration:
        """The policy object, with an experiment arm's epsilon override if any."""
        return Exploration(self.method, self.epsilon if epsilon is None else epsilon, self.temperature, self.floor)


class DiversityConfig(_Strict):
    """Diversity penalty for slates: s' = s − penalty·qᵀQ with q the one-hot group of an action."""

    penalty: float = Field(default=0.0, ge=0.0)
    groups: dict[str, list[str]] = Field(default_factory=dict, description="group name → actions in it.")

    @model_validator(mode="after")
    def _one_group_per_action(self) -> DiversityConfig:
        seen: dict[str, str] = {}
        for group, actions in self.groups.items():
            for action in actions:
                if action in seen:
                    raise ValueError(f"action {action!r} is in diversity groups {seen[action]!r} and {group!r}")
                seen[action] = group
        return self


class CapConfig(_Strict):
    """A frequency cap: at most `limit` shows in any `window_s` seconds, per user (see serving.policy.caps)."""

    name: str = Field(min_length=1)
    window_s: int = Field(ge=1)
    limit: int = Field(ge=1)
    actions: list[str] | None = Field(default=None, min_length=1, description="None: every non-neutral action.")

    def build(self) -> CapRule:
        """The cap rule the Redis counters enforce."""
        return CapRule(self.name, self.window_s, self.limit, frozenset(self.actions) if self.actions else None)


class BudgetConfig(_Strict):
    """A campaign budget per UTC day, with pacing (see serving.policy.budgets)."""

    campaign: str = Field(min_length=1)
    daily_budget: float = Field(gt=0)
    costs: dict[str, float] = Field(min_length=1, description="action → cost charged per show.")
    pacing: Literal["none", "even"] = "even"
    burst: float = Field(default=0.05, ge=0.0, le=1.0)

    @field_validator("costs")
    @classmethod
    def _non_negative(cls, costs: dict[str, float]) -> dict[str, float]:
        bad = sorted(a for a, c in costs.items() if not c >= 0)
        if bad:
            raise ValueError(f"costs must be >= 0; negative for {bad}")
        return costs

    def build(self) -> Budget:
        """The budget the Redis counters enforce."""
        return Budget(self.campaign, dict(self.costs), self.daily_budget, self.pacing, self.burst)


class Deadlines(_Strict):
    """Per-segment latency budget in milliseconds: l_feat + l_score + l_policy ≤ total."""

    features_ms: float = Field(default=20.0, gt=0)
    scoring_ms: float = Field(default=10.0, gt=0)
    total_ms: float = Field(default=40.0, gt=0)

    @model_validator(mode="after")
    def _segments_fit(self) -> Deadlines:
        if self.features_ms + self.scoring_ms > self.total_ms:
            raise ValueError(
                f"features_ms + scoring_ms ({self.features_ms + self.scoring_ms}) exceeds total_ms ({self.total_ms})"
            )
        return self


class SurfaceConfig(_Strict):
    """One surface: everything the policy pipeline needs to decide there."""

    name: str = Field(pattern=r"^[a-z0-9_\-]{1,64}$")
    description: str = ""
    candidates: CandidateSource = CandidateSource()
    model: ModelRef = ModelRef()
    feature_service: str = Field(min_length=1, description="Must be the feature service the model was trained on.")
    neutral_action: str = "no_action"
    slate_size: int = Field(default=1, ge=1, le=20)
    exploration: ExplorationConfig = ExplorationConfig()
    uncertainty_bonus: float = Field(default=0.0, ge=0.0, description="γ in u = μ + γ·s.")
    diversity: DiversityConfig = DiversityConfig()
    caps: list[CapConfig] = Field(default_factory=list)
    budgets: list[BudgetConfig] = Field(default_factory=list)
    deadlines: Deadlines = Deadlines()
    use_last_known_good: bool = Field(default=True, description="Score on cached features when Redis fails.")
    item_caps: list[ItemCapConfig] = Field(default_factory=list, description="Per-item caps (ann_items surfaces).")

    @property
    def is_item_surface(self) -> bool:
        """Whether the surface serves items from the ANN index (ranked by inner product) instead of model actions."""
        return self.candidates.source == "ann_items"

    @model_validator(mode="after")
    def _item_surface_fields(self) -> SurfaceConfig:
        if not self.is_item_surface:
            if self.item_caps:
                raise ValueError("item_caps apply to `candidates.source: ann_items` surfaces only (use caps here)")
            return self
        # Items are ranked by the inner product of the index version served, not by an uplift model, and capped per
        # item: the action-level rules below do not apply to them.
        unused = [name for name in ("model", "caps", "budgets", "diversity", "uncertainty_bonus", "use_last_known_good")
                  if name in self.model_fields_set]
        if unused:
            raise ValueError(f"an ann_items surface ranks items by inner product; remove {unused} (use item_caps)")
        if self.exploration.method == "thompson":
            raise ValueError("ann_items surfaces have no uncertainty model for thompson; use softmax or epsilon_greedy")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> SurfaceConfig:
        for kind, names in (("cap", [c.name for c in self.caps]), ("campaign", [b.campaign for b in self.budgets]),
                            ("item cap", [c.name for c in self.item_caps])):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names {duplicates}")
        return self

    def actions_named(self) -> set[str]:
        """Every action id the surface file mentions (checked against the model at start-up)."""
        named = {self.neutral_action, *(self.candidates.actions or [])}
        named |= {a for group in self.diversity.groups.values() for a in group}
        named |= {a for cap in self.caps for a in (cap.actions or [])}
        return named | {a for budget in self.budgets for a in budget.costs}


class ConsentRule(_Strict):
    """What a user without consent (feature `feature` falsy) may get."""

    feature: str = "consent_marketing"
    required_for: Literal["all_actions", "listed_actions"] = "all_actions"
    actions: list[str] = Field(default_factory=list, description="With required_for=listed_actions: these need it.")
    masked_features: list[str] = Field(
        default_factory=list, description="Features not used (treated as missing) when the user has not consented."
    )


class RegionBundle(_Strict):
    """The rules of one jurisdiction."""

    name: str = Field(pattern=r"^[a-z0-9_\-]{1,64}$")
    regions: list[str] = Field(default_factory=list, description="Region values (context.region or the feature).")
    default: bool = Field(default=False, description="Applies to regions no bundle lists.")
    allowed_actions: list[str] | None = Field(default=None, description="None: every action.")
    blocked_actions: list[str] = Field(default_factory=list)
    consent: ConsentRule = ConsentRule()


@dataclass(frozen=True)
class RegionRules:
    """The rules one decision follows: the user's bundle, made stricter by any other bundle the request names.
    Without consent to every feature in `consent_features` the user has no consent."""

    bundles: tuple[str, ...]
    allowed_actions: frozenset[str] | None  # None: every action
    blocked_actions: frozenset[str]
    consent_features: tuple[str, ...]
    consent_for_all_actions: bool
    consent_actions: frozenset[str]  # with consent_for_all_actions False: the actions that need consent
    masked_features: tuple[str, ...]

    @classmethod
    def of(cls, bundles: Iterable[RegionBundle]) -> RegionRules:
        """The strictest combination: allowed actions intersected, blocked ones, consent features, actions needing
        consent and masked features united; consent needed for all actions if any bundle says so."""
        bundles = list(bundles)
        allowed = [set(b.allowed_actions) for b in bundles if b.allowed_actions is not None]
        return cls(
            bundles=tuple(b.name for b in bundles),
            allowed_actions=frozenset(set.intersection(*allowed)) if allowed else None,
            blocked_actions=frozenset(a for b in bundles for a in b.blocked_actions),
            consent_features=tuple(dict.fromkeys(b.consent.feature for b in bundles)),
            consent_for_all_actions=any(b.consent.required_for == "all_actions" for b in bundles),
            consent_actions=frozenset(a for b in bundles if b.consent.required_for == "listed_actions"
                                      for a in b.consent.actions),
            masked_features=tuple(dict.fromkeys(f for b in bundles for f in b.consent.masked_features)),
        )


class PolicyConfig(_Strict):
    """Every surface and region bundle, plus a version that changes whenever any of them does."""

    surfaces: dict[str, SurfaceConfig]
    regions: dict[str, RegionBundle]
    item_surfaces: dict[str, SurfaceConfig] = Field(
        default_factory=dict, description="ann_items surfaces: served from the item index, not by a champion model.",
    )
    region_codes: list[str] = Field(description="region_code feature value i ↔ region name region_codes[i].")
    version: str
    region_rules: dict[tuple[str, str], RegionRules] = Field(
        default_factory=dict, exclude=True, repr=False,
        description="(the user's bundle, the requested region's bundle) → their combined rules; built at validation "
        "for every pair, so the request path only looks them up.",
    )

    @model_validator(mode="after")
    def _combine_bundles(self) -> PolicyConfig:
        for own in self.regions.values():
            for other in self.regions.values():
                self.region_rules[(own.name, other.name)] = RegionRules.of([own] if own is other else [own, other])
        return self

    def bundle_for(self, region: str | None) -> RegionBundle:
        """The bundle that lists `region`, else the default bundle."""
        for bundle in self.regions.values():
            if region in bundle.regions:
                return bundle
        return next(b for b in self.regions.values() if b.default)

    def region_of(self, region_code: float | None) -> str | None:
        """The name of the user's region_code feature (None when missing, NaN or unknown)."""
        if region_code is None or region_code != region_code:  # None or NaN
            return None
        code = int(region_code)
        return self.region_codes[code] if 0 <= code < len(self.region_codes) else None

    def rules_for(self, profile_region: str | None, requested_region: object = None) -> RegionRules:
        """The rules for a user of `profile_region` (from the profile): its bundle's, made stricter by the bundle of
        the region the request names, if any (a request can never relax them)."""
        own = self.bundle_for(profile_region)
        other = self.bundle_for(requested_region) if isinstance(requested_region, str) and requested_region else own
        return self.region_rules[(own.name, other.name)]

    def policy_version(self, surface: str) -> str:
        """`<surface>@<hash of all policy files>`: logged with every decision."""
        return f"{surface}@{self.version}"


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PolicyConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _parse(model: type[BaseModel], path: Path) -> BaseModel:
    try:
        return model.model_validate(_read_yaml(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise PolicyConfigError(f"{path}: {problems}") from exc


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PolicyConfigError(f"{folder}: folder missing; it must hold one .yaml file per entry")
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise PolicyConfigError(f"{folder}: no .yaml files")
    return files


def _check_regions(regions: dict[str, RegionBundle], paths: dict[str, Path]) -> None:
    defaults = [name for name, b in regions.items() if b.default]
    if len(defaults) != 1:
        raise PolicyConfigError(f"exactly one region bundle must have `default: true`; found {defaults or 'none'}")
    owner: dict[str, str] = {}
    for name, bundle in regions.items():
        for region in bundle.regions:
            if region in owner:
                raise PolicyConfigError(f"{paths[name]}: region {region!r} is also listed by bundle {owner[region]!r}")
            owner[region] = name


def _check_shared_rules(surfaces: dict[str, SurfaceConfig], paths: dict[str, Path]) -> None:
    """Caps and campaigns are global (counted per user / per campaign across surfaces): one definition each."""
    for kind, items in (("cap", lambda s: s.caps), ("campaign", lambda s: s.budgets)):
        seen: dict[str, tuple[str, BaseModel]] = {}
        for name, surface in surfaces.items():
            for item in items(surface):
                key = item.name if kind == "cap" else item.campaign
                if key in seen and seen[key][1] != item:
                    raise PolicyConfigError(
                        f"{paths[name]}: {kind} {key!r} differs from its definition in surface {seen[key][0]!r}; "
                        f"a {kind} is shared across surfaces, so define it identically or rename it"
                    )
                seen[key] = (name, item)


def load_policy_config(folder: Path = DEFAULT_CONFIG_DIR, region_codes: Iterable[str] = ()) -> PolicyConfig:
    """Read and validate `folder/surfaces/*.yaml` and `folder/regions/*.yaml`."""
    surfaces: dict[str, SurfaceConfig] = {}
    regions: dict[str, RegionBundle] = {}
    paths: dict[str, Path] = {}
    digest = hashlib.sha256()
    for kind, model, into in (("surfaces", SurfaceConfig, surfaces), ("regions", RegionBundle, regions)):
        for path in _files(folder / kind):
            item = _parse(model, path)
            if path.stem != item.name:
                raise PolicyConfigError(f"{path}: name {item.name!r} must match the file name {path.stem!r}")
            into[item.name], paths[item.name] = item, path
            digest.update(json.dumps([kind, item.model_dump(mode="json")], sort_keys=True).encode())
    _check_regions(regions, paths)
    _check_shared_rules(surfaces, paths)
    items = {name: surface for name, surface in surfaces.items() if surface.is_item_surface}
    return PolicyConfig(
        surfaces={name: s for name, s in surfaces.items() if name not in items}, item_surfaces=items, regions=regions,
        region_codes=list(region_codes), version=digest.hexdigest()[:12],
    )
