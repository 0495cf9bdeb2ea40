"""Irreversible anonymisation of decision-log records: what a decision or an outcome keeps once its user is erased.

The decision log is the accounting of what was served with which probability (budgets, experiment readouts,
off-policy evaluation), so an erased user's decisions and outcomes are kept but cut from the user: `user_key` becomes
a random token (drawn per decision, never stored with anything that could reverse it: the same token on a decision
and the outcomes attributed to it by decision_id, so that join still holds; no two decisions of the user share
one), `context_hash` a random token, and the logged feature values and masked-feature names are dropped. What is
left (surface, region, time, candidates, scores, probabilities, model) describes the decision, not the person.
"""

from __future__ import annotations

import os
from typing import Any

ANONYMOUS_RECORD: dict[str, Any] = {"features": None, "masked_features": []}
"""Decision fields replaced outright (the logged feature values are the user's own data)."""


def random_token() -> str:
    """32 hex characters from the OS's random source: the shape of a user_key, tied to nothing."""
    return os.urandom(16).hex()


class Anonymiser:
    """Tokens for one erasure: one per decision (shared by its outcomes), fresh ones for everything else."""

    def __init__(self) -> None:
        self._by_decision: dict[str, str] = {}

    def token(self, decision_id: Any) -> str:
        """The token of a decision (the same within this erasure), or a fresh one without a decision id."""
        if not isinstance(decision_id, str) or not decision_id:
            return random_token()
        return self._by_decision.setdefault(decision_id, random_token())

    def decision(self, record: dict[str, Any]) -> dict[str, Any]:
        """A decision record without its user: pseudonyms replaced by random tokens, logged features dropped."""
        out = dict(record)
        out["user_key"] = self.token(record.get("decision_id"))
        if "context_hash" in out:
            out["context_hash"] = random_token()
        for name, value in ANONYMOUS_RECORD.items():
            if name in out:
                out[name] = value
        return out

    def outcome(self, record: dict[str, Any]) -> dict[str, Any]:
        """An outcome record without its user (the token of the decision it names, if any)."""
        return {**record, "user_key": self.token(record.get("decision_id"))}
