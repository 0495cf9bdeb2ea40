"""Eligibility: which candidate actions a surface may show in a region, before consent, caps and budgets."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def eligible_actions(
    candidates: Sequence[str],
    neutral: str,
    allowed: Collection[str] | None,
    blocked: Collection[str],
) -> list[str]:
    """Candidates in order that the region allows (`allowed` None: all) and does not block; the neutral always."""
    return [a for a in candidates if a == neutral or ((allowed is None or a in allowed) and a not in blocked)]
