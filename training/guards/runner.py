"""The guard runner: decision records in, alarms, the cautious switch and the automatic rollback out.

It feeds each new decision record of one surface to the sequential drift test (training/guards/monitor.py), and
each matured record (a decision with its realised value) to the calibration check and to the per-champion value
used by the rollback rule (training/guards/rollback.py). On an alarmed look it:
1. writes `guard.alarm` to the audit trail (when new columns alarm), counted in hyperlift_guard_alarms_total;
2. turns the surface cautious (serving/ops/cautious.py) unless it is already, `guard.cautious_on` in the audit
   trail, hyperlift_guard_cautious_entries_total; re-asserted on every alarmed look if Redis lost it;
3. applies the rollback rule; a rollback goes through training.lifecycle.rollback (audited `model.rollback` with
   actor `guard:drift` and the reason), hyperlift_guard_rollbacks_total, at most once per champion version.
The audit entries name the surface and model versions only: never a user.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from infra.audit import AuditLog, default_log
from serving.ops.cautious import CautiousSwitch
from training.guards.calibration import CalibrationResult
from training.guards.config import GuardConfig
from training.guards.drift import Reference
from training.guards.monitor import DriftMonitor, Look
from training.guards.records import calibration_of, columns, realised_value, scored
from training.guards.rollback import RollbackVerdict, verdict

ACTOR = "guard:drift"
VALUES_KEPT = 20_000  # realised values kept per champion version (the rollback rule's samples)


class GuardMetrics:
    """The guard's counters (on a registry of its own; Dagster shows them as metadata, the bench prints them)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.looks = Counter("hyperlift_guard_looks", "Windows tested.", ["surface"], registry=r)
        self.alarms = Counter("hyperlift_guard_alarms", "Alarmed tests, by column (a feature, __score__, "
                              "calibration).", ["surface", "column"], registry=r)
        self.cautious_entries = Counter("hyperlift_guard_cautious_entries", "Surfaces switched to the cautious "
                                        "policy by the guard.", ["surface"], registry=r)
        self.rollback_checks = Counter("hyperlift_guard_rollback_checks", "Rollback rule evaluations, by result.",
                                       ["surface", "result"], registry=r)
        self.rollbacks = Counter("hyperlift_guard_rollbacks", "Champions rolled back by the guard.",
                                 ["surface", "model"], registry=r)

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples `name` whose labels include `labels`."""
        return sum(s.value for m in self.registry.collect() for s in m.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@dataclass
class GuardRunner:
    """Watches one surface (see the module docstring). `previous_champion()` answers the version a rollback would
    return to (None: nothing to return to), `promoted_at(version)` when that version was promoted (epoch seconds,
    None if unknown), `roll_back(actor, reason)` moves the alias back."""

    surface: str
    model_name: str
    reference: Reference
    config: GuardConfig
    switch: CautiousSwitch
    neutral: str
    costs: Mapping[str, float]
    previous_champion: Callable[[], str | None]
    promoted_at: Callable[[str], float | None]
    roll_back: Callable[[str, str], object]
    audit: AuditLog = field(default_factory=default_log)
    metrics: GuardMetrics = field(default_factory=GuardMetrics)
    now: Callable[[], float] = time.time
    actor: str = ACTOR
    # state: the looks made, the first alarmed one, the rollback verdicts, the versions rolled back
    monitor: DriftMonitor = field(init=False)
    looks: list[Look] = field(default_factory=list, init=False)
    first_alarm: Look | None = field(default=None, init=False)
    verdicts: list[RollbackVerdict] = field(default_factory=list, init=False)
    rolled_back: set[str] = field(default_factory=set, init=False)
    champion: str | None = field(default=None, init=False)  # the model version of the newest decision seen
    _matured: deque = field(init=False)
    _values: dict[str, deque] = field(default_factory=dict, init=False)  # realised values per champion version
    _alarmed_columns: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.monitor = DriftMonitor(self.reference, self.config)
        self._matured = deque(maxlen=self.config.calibration.window)

    # ------------------------------------------------------------------ input
    def observe(self, records: Sequence[Mapping]) -> list[Look]:
        """New decision records of this surface, oldest first; returns the looks they completed."""
        mine = [r for r in records if r.get("surface", self.surface) == self.surface]
        if not mine:
            return []
        self.champion = str(mine[-1].get("model_version")) if mine[-1].get("model_version") is not None else None
        looks = self.monitor.observe(columns(mine, self.reference.columns), self._calibration)
        for look in looks:
            self.looks.append(look)
            self.metrics.looks.labels(self.surface).inc()
            if look.alarmed:
                self._on_alarm(look)
        return looks

    def mature(self, records: Sequence[Mapping]) -> None:
        """Matured decision records (with `value`, or `revenue` whose served action's cost is subtracted)."""
        for r in records:
            if r.get("surface", self.surface) != self.surface:
                continue
            if scored(r):
                self._matured.append(r)
            if not r.get("fallback") and r.get("model_version") is not None:
                kept = self._values.setdefault(str(r["model_version"]), deque(maxlen=VALUES_KEPT))
                kept.append(realised_value(r, self.costs))

    def _calibration(self) -> CalibrationResult | None:
        if len(self._matured) < self.config.calibration.min_outcomes:
            return None
        return calibration_of(list(self._matured), self.neutral, self.costs)

    # ------------------------------------------------------------------ actions
    def _on_alarm(self, look: Look) -> None:
        if self.first_alarm is None:
            self.first_alarm = look
        for column in look.alarms:
            self.metrics.alarms.labels(self.surface, column).inc()
        new = set(look.alarms) - self._alarmed_columns
        by_name = {c.name: c for c in look.comparisons}
        if new:
            self._alarmed_columns |= new
            self.audit.record(
                self.actor, "guard.alarm", target=f"surface:{self.surface}", reason=f"drift in {sorted(new)}",
                seen=look.seen, alpha=look.alpha, model_version=self.champion,
                psi={c: round(by_name[c].psi, 4) for c in look.alarms if c in by_name},
            )
        self.switch.refresh()  # the guard's own view of Redis: re-assert when a restart lost the switch
        if self.switch.policy_for(self.surface) is None:
            reason = f"drift alarm on {', '.join(look.alarms)} at decision {look.seen}"
            self.switch.set(self.surface, True, reason, self.actor)
            self.metrics.cautious_entries.labels(self.surface).inc()
            self.audit.record(self.actor, "guard.cautious_on", target=f"surface:{self.surface}", reason=reason,
                              policy=self.config.cautious.model_dump())
        self._consider_rollback()

    def _consider_rollback(self) -> None:
        current = self.champion
        if current is None or current in self.rolled_back:
            return
        previous = self.previous_champion()
        if previous is None:
            self.metrics.rollback_checks.labels(self.surface, "no_previous").inc()
            return
        found = verdict(np.array(self._values.get(current, ())), np.array(self._values.get(previous, ())),
                        self.promoted_at(current), self.now(), self.config.rollback)
        self.verdicts.append(found)
        self.metrics.rollback_checks.labels(self.surface, "roll_back" if found.roll_back else "keep").inc()
        if found.roll_back:
            self.roll_back(self.actor, f"surface {self.surface}: {found.reason}")
            self.rolled_back.add(current)
            self.metrics.rollbacks.labels(self.surface, self.model_name).inc()


def promotion_time(audit: AuditLog, model_name: str) -> Callable[[str], float | None]:
    """`promoted_at` from the audit trail: the time of the last `model.promote` of `model_name@version`."""
    def promoted_at(version: str) -> float | None:
        entries = [e for e in audit.entries(action="model.promote") if e["target"] == f"{model_name}@{version}"]
        return entries[-1]["ts"] if entries else None
    return promoted_at


def registry_runner(
    tracking_uri: str, model_name: str, surface: str, reference: Reference, config: GuardConfig,
    switch: CautiousSwitch, neutral: str, costs: Mapping[str, float], audit: AuditLog | None = None,
    metrics: GuardMetrics | None = None,
) -> GuardRunner:
    """A runner wired to the MLflow registry (champion history, rollback) and the audit trail (promotion times)."""
    from training.lifecycle import champion_history, rollback  # MLflow only where a registry is used

    audit = audit or default_log()

    def previous() -> str | None:
        history = champion_history(tracking_uri, model_name)
        return history[-1] if history else None

    return GuardRunner(
        surface, model_name, reference, config, switch, neutral, costs, previous, promotion_time(audit, model_name),
        lambda actor, reason: rollback(tracking_uri, model_name, actor, reason), audit, metrics or GuardMetrics(),
    )
