"""Fair exposure over the decision log (training/fairness.py): who is shown promotions and what they are expected to
gain, by region, device and customer segment; the parity rules of serving/conf/fairness.yaml judged, breaches
audited, and — when the configuration enforces them — caps put in force for serving (serving/ops/parity.py)."""

import dagster as dg
from pydantic import Field

from dagster_project.assets.decisions import DECISION_TRACE
from dagster_project.plots import save_plot
from dagster_project.resources import DataLakeResource, RedisResource
from infra.audit import default_log
from serving.ops.parity import ParityCaps
from serving.store.decision_log import DECISION_FORMAT, read_partitions
from training.fairness import (
    FAIRNESS_FILE, FairnessConfig, cap_fields, exposure_figure, exposure_frame, exposure_report, parity_verdicts,
)

REPORT = "reports/fair_exposure.parquet"


class FairExposureConfig(dg.Config):
    """The rules' file, the neutral actions (not promotions) and how many recent decisions are judged."""

    fairness_file: str = str(FAIRNESS_FILE)
    neutral_actions: list[str] = Field(default_factory=lambda: ["no_action"])
    last_decisions: int = Field(default=50_000, ge=1)


@dg.asset(deps=["decision_trace"], group_name="guards")
def fair_exposure(
    context: dg.AssetExecutionContext, config: FairExposureConfig, lake: DataLakeResource, redis: RedisResource,
) -> dg.MaterializeResult:
    """Promotion exposure and expected value per group; parity verdicts; caps in force when enforced."""
    rules = FairnessConfig.load(config.fairness_file)
    root = lake.path(DECISION_TRACE)
    decisions = read_partitions(root, record_format=DECISION_FORMAT) if root.exists() else None
    if decisions is None or decisions.empty:
        raise FileNotFoundError(f"no decisions in {root}: materialize decision_trace (decision_log_job) first")
    recent = decisions.sort_values("ts").tail(config.last_decisions).to_dict("records")
    report = exposure_report(exposure_frame(recent, config.neutral_actions))
    verdicts = parity_verdicts(report, rules.rules)
    broken = [v for v in verdicts if v.broken]
    run = f"dagster:{context.run_id}"
    audit = default_log()
    for verdict in broken:
        audit.record(run, "parity.alarm", target=f"{verdict.surface}/{verdict.dimension}",
                     reason=f"promotion-rate ratio {verdict.ratio:.3f} < {verdict.min_ratio:g}",
                     ratio=round(verdict.ratio, 4), caps=verdict.caps)
    caps = cap_fields(verdicts)
    if rules.enforce:
        switch = ParityCaps(redis.client())
        switch.refresh()
        before = {f"{s}|{d}|{g}": k for s, c in switch.caps().items() for (d, g), k in c.items()}
        switch.replace(caps)
        if caps != before:
            audit.record(run, "parity.caps", target="fair exposure", reason=f"{len(broken)} dimension(s) over the bound",
                         caps=caps, before=before)
    path = lake.write(REPORT, report)
    shown = report.round({"promotion_rate": 3, "policy_rate": 3, "expected_value_per_decision": 3, "rate_ratio": 3})
    context.log.info("fair exposure over %d decisions: %d dimension(s) judged, %d over the bound%s", len(recent),
                     len(verdicts), len(broken), f"; caps in force: {caps}" if rules.enforce else "")
    return dg.MaterializeResult(metadata={
        "decisions": len(recent),
        "report": dg.MetadataValue.md(shown.to_markdown(index=False)),
        "verdicts": dg.MetadataValue.md("\n".join(
            f"- {v.surface} / {v.dimension}: ratio {v.ratio:.3f} (min {v.min_ratio:g}) "
            f"{'**over the bound**, caps ' + str(v.caps) if v.broken else 'ok'}" for v in verdicts) or "(none judged)"),
        "breaches": len(broken),
        "enforced": rules.enforce,
        "caps_in_force": dg.MetadataValue.json(caps if rules.enforce else {}),
        "path": dg.MetadataValue.path(str(path)),
        **save_plot(exposure_figure(report, verdicts), lake.path("reports/fair_exposure.png"), "exposure"),
    })
