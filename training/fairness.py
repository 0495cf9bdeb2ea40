"""Fair exposure: who is shown promotions, and what they are expected to gain, by region, device and customer
segment; and the parity guard that caps a disparity (docs/guards.md, "Fair exposure").

Every decision record carries the features the service read (serving/store/decision_log.py), so each decision
belongs to a group per dimension: its region (`region_code`), its device (`is_mobile`) and its segment (buyers,
who have purchased before, and non-buyers). Per group the report gives the decisions, the share answered with a
promotion (any action but the neutral one), the expected incremental net value per decision (the logged model
score of the action served: what the model expected that user to gain, 0 for the neutral action) and each group's
promotion rate relative to the most exposed group of its dimension.

The parity guard (serving/conf/fairness.yaml) asks, per dimension, that the least exposed group's promotion rate be
at least `min_ratio` of the most exposed group's (the four-fifths rule at 0.8). When a dimension breaks it, the
over-exposed groups get a keep-probability `keep = (min_rate / min_ratio) / rate`: serving answers a decision of
that group with the neutral action with probability 1 − keep (fallback `parity_cap`, serving/ops/parity.py), which
brings the group's promotion rate down to the bound. Caps only ever lower exposure; an under-exposed group is never
pushed promotions it was not chosen for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.transforms import DEVICES, REGIONS
from training.guards.records import as_list, logged_values

PARITY_CAP = "parity_cap"  # the fallback of decisions a cap answered neutral (serving/ops/parity.py)
FAIRNESS_FILE = Path(__file__).resolve().parents[1] / "serving" / "conf" / "fairness.yaml"
UNKNOWN = "unknown"


def region_of(values: Mapping[str, float]) -> str:
    code = values.get("region_code")
    return REGIONS[int(code)] if code is not None and code == code and 0 <= int(code) < len(REGIONS) else UNKNOWN


def device_of(values: Mapping[str, float]) -> str:
    mobile = values.get("is_mobile")
    if mobile is None or mobile != mobile:
        return UNKNOWN
    return DEVICES[0] if mobile >= 0.5 else DEVICES[1]


def segment_of(values: Mapping[str, float]) -> str:
    purchases = values.get("purchases_total")
    if purchases is None or purchases != purchases:
        return UNKNOWN
    return "buyer" if purchases > 0 else "non_buyer"


DIMENSIONS: dict[str, Callable[[Mapping[str, float]], str]] = {
    "region": region_of, "device": device_of, "segment": segment_of,
}
"""Dimension → the group of a decision, from the features the service read (the same functions serving uses)."""


class ParityRule(BaseModel):
    """One dimension's bound: the least exposed group's promotion rate ≥ `min_ratio` × the most exposed group's."""

    model_config = ConfigDict(extra="forbid")
    dimension: str
    min_ratio: float = Field(gt=0.0, le=1.0)
    min_decisions: int = Field(default=200, ge=1, description="groups with fewer decisions are reported, not judged")


class FairnessConfig(BaseModel):
    """serving/conf/fairness.yaml: the rules, and whether the guard caps (`enforce`) or only reports and alarms."""

    model_config = ConfigDict(extra="forbid")
    enforce: bool = False
    rules: list[ParityRule] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path | str = FAIRNESS_FILE) -> FairnessConfig:
        path = Path(path)
        config = cls.model_validate(yaml.safe_load(path.read_text()) or {})
        unknown = sorted({r.dimension for r in config.rules} - set(DIMENSIONS))
        if unknown:
            raise ValueError(f"{path}: unknown dimensions {unknown}; use {sorted(DIMENSIONS)}")
        return config


def _chosen_score(record: Mapping) -> float:
    """The logged score of the first action served (0 when it was not scored: neutral answers, fallbacks)."""
    chosen, candidates, scores = (as_list(record.get(k)) for k in ("chosen", "candidates", "scores"))
    at = candidates.index(chosen[0]) if chosen and chosen[0] in candidates else len(scores)
    score = scores[at] if at < len(scores) else None
    return 0.0 if score is None or score != score else float(score)


def exposure_frame(records: Iterable[Mapping], neutral_actions: Iterable[str]) -> pd.DataFrame:
    """One row per decision: surface, each dimension's group, promoted (bool), expected value."""
    neutral = set(neutral_actions)
    rows = []
    for record in records:
        values = logged_values(record)
        chosen = as_list(record.get("chosen"))
        promoted = bool(chosen) and chosen[0] not in neutral
        rows.append({
            "surface": record.get("surface", ""),
            **{dimension: group(values) for dimension, group in DIMENSIONS.items()},
            "promoted": promoted,
            "capped": record.get("fallback") == PARITY_CAP,
            "expected_value": _chosen_score(record) if promoted else 0.0,
        })
    return pd.DataFrame(rows, columns=["surface", *DIMENSIONS, "promoted", "capped", "expected_value"])


REPORT_COLUMNS = ["surface", "dimension", "group", "decisions", "capped", "promotions", "promotion_rate",
                  "policy_rate", "expected_value_per_decision", "rate_ratio"]


def exposure_report(frame: pd.DataFrame) -> pd.DataFrame:
    """Per surface, dimension and group: decisions, capped (answered neutral by a parity cap), promotions,
    promotion_rate (served), policy_rate (among the decisions no cap touched: the cap is drawn before the policy
    chooses, so these are a random sample of what the policy would do), expected_value_per_decision and rate_ratio
    (the group's served rate over the most exposed group's of its surface and dimension)."""
    if frame.empty:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    parts = []
    for dimension in DIMENSIONS:
        grouped = frame.groupby(["surface", dimension], sort=True).agg(
            decisions=("promoted", "size"), capped=("capped", "sum"), promotions=("promoted", "sum"),
            expected_value_per_decision=("expected_value", "mean"),
        ).reset_index().rename(columns={dimension: "group"})
        grouped.insert(1, "dimension", dimension)
        parts.append(grouped)
    report = pd.concat(parts, ignore_index=True)
    report[["capped", "promotions"]] = report[["capped", "promotions"]].astype(int)
    report["promotion_rate"] = report["promotions"] / report["decisions"]
    uncapped = report["decisions"] - report["capped"]
    report["policy_rate"] = np.where(uncapped > 0, report["promotions"] / uncapped.where(uncapped > 0, 1), 0.0)
    top = report.groupby(["surface", "dimension"])["promotion_rate"].transform("max")
    report["rate_ratio"] = np.where(top > 0, report["promotion_rate"] / top.where(top > 0, 1.0), 1.0)
    return report[REPORT_COLUMNS]


@dataclass(frozen=True)
class ParityVerdict:
    """A dimension of a surface judged on the policy's own rates (caps in force do not hide a disparity, so the caps
    stay put instead of flapping): the lowest rate over the highest, whether that breaks the rule, and the
    keep-probabilities that bring the over-exposed groups' served rates down to the bound."""

    surface: str
    dimension: str
    ratio: float
    min_ratio: float
    caps: dict[str, float]

    @property
    def broken(self) -> bool:
        return self.ratio < self.min_ratio


def parity_verdicts(report: pd.DataFrame, rules: Sequence[ParityRule]) -> list[ParityVerdict]:
    """Judge every (surface, ruled dimension) on its groups with enough decisions (the `unknown` group excluded)."""
    verdicts = []
    for rule in rules:
        judged = report[(report["dimension"] == rule.dimension) & (report["group"] != UNKNOWN)
                        & (report["decisions"] >= rule.min_decisions)]
        for surface, groups in judged.groupby("surface", sort=True):
            if len(groups) < 2 or groups["policy_rate"].max() <= 0:
                continue
            low, high = float(groups["policy_rate"].min()), float(groups["policy_rate"].max())
            bound = low / rule.min_ratio
            caps = {str(g): round(bound / r, 6) for g, r in zip(groups["group"], groups["policy_rate"]) if r > bound}
            verdicts.append(ParityVerdict(str(surface), rule.dimension, low / high, rule.min_ratio, caps))
    return verdicts


def cap_fields(verdicts: Iterable[ParityVerdict]) -> dict[str, float]:
    """The caps of the broken verdicts as the Redis hash serving polls: `surface|dimension|group` → keep."""
    return {f"{v.surface}|{v.dimension}|{group}": keep for v in verdicts if v.broken for group, keep in v.caps.items()}


def exposure_figure(report: pd.DataFrame, verdicts: Sequence[ParityVerdict] = ()):  # -> matplotlib Figure
    """Promotion rate (served, and the policy's own where caps cut it) and expected value per decision, one panel per
    dimension and surface; the rule's bound as a dashed line."""
    from matplotlib.figure import Figure

    panels = list(report.groupby(["surface", "dimension"], sort=True)) or [(("", ""), report)]
    bounds = {(v.surface, v.dimension): v for v in verdicts}
    figure = Figure(figsize=(3.6 * len(panels), 3.4))  # not pyplot's: nothing keeps it once dropped
    axes = figure.subplots(1, len(panels), squeeze=False)
    for ax, ((surface, dimension), groups) in zip(axes.flat, panels):
        x = np.arange(len(groups))
        ax.bar(x - 0.2, groups["policy_rate"], width=0.4, label="policy", color="#9bb7d4")
        ax.bar(x + 0.2, groups["promotion_rate"], width=0.4, label="served", color="#1f4e79")
        for position, value in zip(x, groups["expected_value_per_decision"]):
            ax.annotate(f"EV {value:.2f}", (position, 0), xytext=(0, 2), textcoords="offset points", ha="center",
                        fontsize=7, color="white")
        verdict = bounds.get((surface, dimension))
        if verdict is not None:
            ax.axhline(float(groups["policy_rate"].min()) / verdict.min_ratio, color="grey", linestyle="--",
                       linewidth=1, label=f"bound (min ratio {verdict.min_ratio:g})")
        ax.set_xticks(x, groups["group"].tolist(), fontsize=8)
        ax.set_ylim(0, max(0.05, float(groups[["policy_rate", "promotion_rate"]].to_numpy().max()) * 1.25))
        ax.set_title(f"{surface}: {dimension}", fontsize=9)
        ax.set_ylabel("promotion rate", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure
