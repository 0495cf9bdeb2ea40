"""Decision records (serving/store/decision_log.py DECISION_FORMAT) as the guards' columns: the logged features,
the score, and the calibration and value inputs of matured decisions. Records come from the Redis stream (dicts,
`features` a mapping) or the lake (`features` as JSON text); both are read the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from training.guards.calibration import CalibrationResult, calibration, realised_uplift
from training.guards.monitor import SCORE


def as_list(value: object) -> list:
    """A record's list field as a list: the stream gives lists, the lake numpy arrays, a missing field None."""
    return [] if value is None else list(value)  # type: ignore[call-overload]


def logged_values(record: Mapping) -> dict[str, float]:
    """The record's features as read, all views merged ({} when no read was made)."""
    features = record.get("features")
    if isinstance(features, (str, bytes)):
        features = json.loads(features)
    out: dict[str, float] = {}
    for view in (features or {}).values():
        for name, value in (view.get("values") or {}).items():
            out[name] = np.nan if value is None else float(value)
    return out


def best_score(record: Mapping) -> float:
    """The highest logged candidate score (NaN when nothing was scored: fallbacks, single survivors)."""
    scores = [s for s in as_list(record.get("scores")) if s is not None and s == s]
    return float(max(scores)) if len(scores) > 1 else np.nan


def columns(records: Sequence[Mapping], names: Iterable[str]) -> dict[str, np.ndarray]:
    """One array per monitored column (`names`: features and SCORE), NaN where a record lacks it."""
    names = list(names)
    rows = [logged_values(r) for r in records]
    out = {name: np.array([row.get(name, np.nan) for row in rows], np.float64) for name in names if name != SCORE}
    if SCORE in names:
        out[SCORE] = np.array([best_score(r) for r in records], np.float64)
    return out


def scored(record: Mapping) -> bool:
    """A decision the policy drew (not a fallback) over more than one scored candidate."""
    return not record.get("fallback") and sum(s is not None and s == s for s in as_list(record.get("scores"))) > 1


def realised_value(record: Mapping, costs: Mapping[str, float]) -> float:
    """The decision's realised net value: `value` when the record carries it, else revenue − the served action's
    cost (the model's scores are net of costs too)."""
    if record.get("value") is not None:
        return float(record["value"])
    chosen = as_list(record.get("chosen")) or [None]
    return float(record.get("revenue") or 0.0) - float(costs.get(chosen[0], 0.0))


def calibration_of(records: Sequence[Mapping], neutral: str, costs: Mapping[str, float]) -> CalibrationResult:
    """The calibration check over matured, scored decision records (training/guards/calibration.py)."""
    predicted, realised = [], []
    served_counts: dict[str, int] = {}
    for r in records:
        if not scored(r):
            continue
        served = (as_list(r.get("chosen")) or [None])[0]
        candidates, scores = as_list(r["candidates"]), as_list(r["scores"])
        for a in candidates:
            served_counts[a] = served_counts.get(a, 0) + (a == served)
        pairs = [(a, float(s)) for a, s in zip(candidates, scores) if s is not None and s == s and a != neutral]
        predicted.append(float(np.mean([s for _, s in pairs])) if pairs else np.nan)
        realised.append(realised_uplift(realised_value(r, costs), served, candidates, as_list(r["probabilities"]),
                                        neutral, [a for a, _ in pairs]))
    return calibration(np.array(predicted), np.array(realised), min(served_counts.values(), default=0))
