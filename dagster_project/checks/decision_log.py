"""Decision-log checks: every decision the service served is in the lake or on its way, none was dropped, and none
served an action needing a consent the user had revoked."""

import dagster as dg

from dagster_project.assets.decisions import CONSENT_EVENTS, DECISION_TRACE
from dagster_project.resources import DataLakeResource, RedisResource
from feature_repo.transforms import REGIONS
from serving.decision.surfaces import DEFAULT_CONFIG_DIR, load_policy_config
from serving.policy.consent import purposes_needed
from serving.store.decision_log import CONSENT_FORMAT, DECISION_FORMAT, read_partitions
from serving.store.reconcile import reconcile
from training.consent import consent_violations


@dg.asset_check(asset="decision_trace", description="Served decisions = logged + in flight; nothing dropped.")
def decision_log_reconciled(lake: DataLakeResource, redis: RedisResource) -> dg.AssetCheckResult:
    """The trace writers' counters against the drain's receipts (serving/store/reconcile.py); fails (warning) when
    a record was dropped or a finished writer has records neither logged, in flight nor counted."""
    result = reconcile(redis.client(), lake.path(DECISION_TRACE), redis.decision_stream, redis.drain_group)
    dropped = result.dropped()
    return dg.AssetCheckResult(
        passed=not dropped and not result.finished_unaccounted(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "served": result.total("served"),
            "logged": result.total("logged"),
            "in_flight": result.total("in_flight"),
            "dropped": dg.MetadataValue.json(dropped),
            "finished_unaccounted": result.finished_unaccounted(),
            "released_unconfirmed": result.total("released"),
            "writers": len(result.writers),
        },
    )


@dg.asset_check(
    asset="decision_trace", additional_deps=["consent_events"],
    description="No decision served an action needing a consent the user had revoked by then.",
)
def decisions_honour_consent(lake: DataLakeResource) -> dg.AssetCheckResult:
    """Replays the decision log against the consent events (training.consent.consent_violations): a decision made
    after the service took a revocation must not serve an action that needs the revoked purpose in the user's region
    (the policy files of serving/conf say which). Fails (error) on any such decision."""
    decisions = read_partitions(lake.path(DECISION_TRACE), record_format=DECISION_FORMAT)
    events = read_partitions(lake.path(CONSENT_EVENTS), record_format=CONSENT_FORMAT)
    policy = load_policy_config(DEFAULT_CONFIG_DIR, REGIONS)
    neutrals = {name: s.neutral_action for name, s in {**policy.surfaces, **policy.item_surfaces}.items()}
    violations = consent_violations(decisions, events, purposes_needed(policy), neutrals)
    revocations = int((~events["granted"].astype(bool)).sum()) if len(events) else 0
    return dg.AssetCheckResult(
        passed=violations.empty,
        metadata={
            "decisions": len(decisions),
            "consent_events": len(events),
            "revocations": revocations,
            "violations": len(violations),
            "first_violations": dg.MetadataValue.json(violations.head(5).astype(str).to_dict("records")),
        },
    )
