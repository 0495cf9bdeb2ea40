"""Request and response bodies of the decision and outcome APIs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_CONTEXT_KEYS = 32
MAX_EVENTS_PER_CALL = 500  # events in one /v1/events call (the 64 kB body limit holds a few hundred anyway)
MAX_CONTEXT_STRING = 256
Scalar = str | int | float | bool | None


class DecisionRequest(BaseModel):
    """Ask for the best action (or slate) for one user on one surface."""

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=0, lt=2**63, description="The shopper's id (the Feast `user` entity key).")
    surface: str = Field(min_length=1, max_length=64, description="A configured surface, e.g. 'home'.")
    context: dict[str, Scalar] | None = Field(
        default=None, description="Flat request context (device, page, region, ...): at most 32 scalar values."
    )
    candidates: list[str] | None = Field(
        default=None, min_length=1, max_length=100, description="Restrict the choice to these action ids."
    )

    @field_validator("context")
    @classmethod
    def _small_context(cls, context: dict[str, Scalar] | None) -> dict[str, Scalar] | None:
        if context is None:
            return None
        if len(context) > MAX_CONTEXT_KEYS:
            raise ValueError(f"context has {len(context)} keys; at most {MAX_CONTEXT_KEYS} are allowed")
        long = sorted(k for k, v in context.items() if len(k) > 64 or (isinstance(v, str) and len(v) > MAX_CONTEXT_STRING))
        if long:
            raise ValueError(f"context keys {long}: keys are at most 64 characters, strings at most {MAX_CONTEXT_STRING}")
        return context


class ScoredAction(BaseModel):
    """One chosen action: its score (expected incremental net value, after bonus and diversity penalty) and the
    probability the policy chose it with (for slate slot j > 1: given the actions in the slots before it)."""

    action_id: str
    score: float
    propensity: float


class ModelRef(BaseModel):
    """The registered model version that scored the request."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str


class DecisionResponse(BaseModel):
    """The decision, with everything needed to attribute and evaluate it later."""

    decision_id: str
    surface: str
    actions: list[ScoredAction] = Field(description="The slate in slot order (one action on single-slot surfaces).")
    slate_propensity: float = Field(description="Probability of this ordered slate under the policy.")
    model: ModelRef | None
    feature_service: str | None
    policy_version: str
    experiments: dict[str, str] = Field(description="experiment → arm the user is in.")
    fallback: str | None = Field(description="Why the policy was not followed (null when it was).")


class OutcomeRequest(BaseModel):
    """A delayed outcome (purchase, conversion), keyed by the decision or by the user and time."""

    model_config = ConfigDict(extra="forbid")

    decision_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    user_id: int | None = Field(default=None, ge=0, lt=2**63)
    ts: float | None = Field(default=None, gt=0, description="Epoch seconds of the outcome (default: now).")
    kind: Literal["purchase", "conversion"] = "purchase"
    revenue: float = Field(default=0.0, ge=0.0, le=1_000_000.0)

    @model_validator(mode="after")
    def _keyed(self) -> OutcomeRequest:
        if self.decision_id is None and self.user_id is None:
            raise ValueError("give decision_id, or user_id (attributed to the user's last decision in the window)")
        return self


class OutcomeAccepted(BaseModel):
    """The outcome was stored for the join."""

    outcome_id: str
    attributed_by: Literal["decision_id", "user_and_time"]


class EventBatch(BaseModel):
    """Raw events in the union schema of `feature_repo.contracts` (fields of other event types are left out)."""

    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_CALL)


class EventRejection(BaseModel):
    """An event that was not applied: its position in the call, id, the contract rule it broke and why."""

    index: int
    event_id: str | None
    rule: str
    reason: str


class EventsApplied(BaseModel):
    """What a call to /v1/events did."""

    accepted: int
    rejected: list[EventRejection]
    users_updated: int
    rows_written: int
