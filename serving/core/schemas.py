"""Request and response bodies of the HTTP API, and the bodies of its error answers (as the OpenAPI document shows).

Requests are validated strictly (`strict=True`): a user id is a JSON integer (`true` is not user 1, `"1"` is text,
1.5 has a fraction; 7.0 is 7, as JSON and JSON Schema have one number type), an amount a JSON number, and every
number finite (`NaN` and `Infinity`, which Python's JSON reader accepts, are refused). The published schema says
the same, so what it calls valid is accepted and what it calls invalid refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from feature_repo.contracts import MAX_ID, MAX_MONEY

MAX_CONTEXT_KEYS = 32
MAX_EVENTS_PER_CALL = 500  # events in one /v1/events call (the 64 kB body limit holds a few hundred anyway)
MAX_CONTEXT_STRING = 256
MAX_CONTEXT_KEY = 64
Scalar = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None


def _whole_number(value: object) -> object:
    """7.0 as 7 (the same JSON number); anything else as sent, for strict int validation to judge (bools, text,
    fractions and floats beyond int64, such as 1e300, are refused there)."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**63 else value


UserId = Annotated[
    int,
    Field(ge=0, le=MAX_ID, description="The shopper's id, as the shop knows it (the service reads the Feast `user` "
                                       "entity by its keyed pseudonym): a JSON integer, at most 2^53 - 1 (the "
                                       "largest a JSON number holds exactly)."),
    BeforeValidator(_whole_number),
]
CONTEXT_SCHEMA = {
    "type": "object",
    "maxProperties": MAX_CONTEXT_KEYS,
    "propertyNames": {"maxLength": MAX_CONTEXT_KEY},
    "additionalProperties": {"anyOf": [
        {"type": "string", "maxLength": MAX_CONTEXT_STRING}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    ]},
}


class DecisionRequest(BaseModel):
    """Ask for the best action (or slate) for one user on one surface."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [{"user_id": 42, "surface": "home"},
                                        {"user_id": 42, "surface": "home", "context": {"page": "landing"}}]},
    )

    user_id: UserId
    surface: str = Field(min_length=1, max_length=64, description="A configured surface, e.g. 'home'.")
    context: Annotated[dict[str, Scalar], WithJsonSchema(CONTEXT_SCHEMA)] | None = Field(
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
        long = sorted(
            k for k, v in context.items()
            if len(k) > MAX_CONTEXT_KEY or (isinstance(v, str) and len(v) > MAX_CONTEXT_STRING)
        )
        if long:
            raise ValueError(f"context keys {long}: keys are at most {MAX_CONTEXT_KEY} characters, "
                             f"strings at most {MAX_CONTEXT_STRING}")
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
    redrawn: bool = Field(
        default=False,
        description="True when the slate was redrawn after a cap or budget reservation conflict: its propensities are "
        "then conditional on concurrent requests, not logging probabilities, and off-policy estimates leave the "
        "decision out (counted in hyperlift_decision_redraws_total).",
    )


IDEMPOTENCY_KEY = r"^[!-~]{1,128}$"
"""A client's idempotency key: 1 to 128 printable ASCII characters, no space (a UUID, a hash, an order id)."""


class OutcomeRequest(BaseModel):
    """A delayed outcome (purchase, conversion), keyed by the decision or by the user and time."""

    # The schema's anyOf is `_keyed`'s rule, so a body without either key is invalid in the document too.
    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"anyOf": [{"required": ["decision_id"]}, {"required": ["user_id"]}],
                           "examples": [{"user_id": 42, "revenue": 25.0, "idempotency_key": "order-1001"}]},
    )

    decision_id: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{32}$",
        description="The decision_id of a decision this service answered (it carries a check: another is a 422).",
    )
    user_id: UserId | None = None
    ts: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Epoch seconds of the outcome (default: now); later than the service's clock + 5 minutes is a 422.",
    )
    kind: Literal["purchase", "conversion"] = "purchase"
    revenue: float = Field(default=0.0, ge=0.0, le=MAX_MONEY, allow_inf_nan=False)
    idempotency_key: str | None = Field(
        default=None, pattern=IDEMPOTENCY_KEY,
        description="As the Idempotency-Key header (send either, or both alike): a retry with the same key is answered "
        "as a duplicate and not stored again. Without one, every call stores an outcome.",
    )

    @model_validator(mode="after")
    def _keyed(self) -> OutcomeRequest:
        if self.decision_id is None and self.user_id is None:
            raise ValueError("give decision_id, or user_id (attributed to the user's last decision in the window)")
        return self


class OutcomeAccepted(BaseModel):
    """The outcome was stored for the join."""

    outcome_id: str
    attributed_by: Literal["decision_id", "user_and_time"]
    duplicate: bool = Field(
        default=False, description="True: a retry of the outcome already stored under this idempotency key; not "
        "stored again (same outcome_id).",
    )


class ConsentRequest(BaseModel):
    """A consent event: the user granted or revoked one purpose at `ts`. The later event by event time wins, from
    this API or from the CRM snapshot (whose profile rows are stamped when the CRM recorded the consent)."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [{"user_id": 42, "purpose": "consent_marketing", "granted": False}]},
    )

    user_id: UserId
    purpose: str = Field(
        default="consent_marketing", min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$",
        description="The consent feature the region bundles read (`consent.feature`); an unknown one is a 422.",
    )
    granted: bool = Field(description="true: consent given; false: revoked.")
    ts: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Epoch seconds when the user gave or revoked it (default: now); later than the service's clock "
        "+ 5 minutes is a 422.",
    )
    event_id: str | None = Field(default=None, pattern=IDEMPOTENCY_KEY, description="The caller's id of the event.")


class ConsentState(BaseModel):
    """The consent in effect for one purpose after the call."""

    granted: bool
    ts: float = Field(description="Epoch seconds of the event in effect.")
    source: str = Field(description="Its producer: `api` (this API); the CRM's rows are read with the features.")


class ConsentRecorded(BaseModel):
    """What a consent call did."""

    event_id: str
    applied: bool = Field(description="False: a later event (or a revocation of the same instant) stands; the call "
                          "is still in the audit trail.")
    in_effect: ConsentState


class EventBatch(BaseModel):
    """Raw events in the union schema of `feature_repo.contracts` (fields of other event types are left out)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    events: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_EVENTS_PER_CALL,
        description="Each event is checked against its contract (`feature_repo.contracts`: event_id, event_type, "
        "event_version, ts, user_id, session_id, then the fields of its type; numbers as JSON numbers, ids as JSON "
        "integers up to 2^53 - 1, price and revenue up to 1,000,000) one by one: an event that breaks a rule is "
        "kept in the quarantine and listed in `rejected`, the others are applied.",
    )


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


class ErrorMessage(BaseModel):
    """An error answered with one message that says what went wrong and what to do."""

    detail: str


class ValidationIssue(BaseModel):
    """One way a request broke the published schema, as pydantic reports it (located under "body", as FastAPI does)."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class InvalidRequest(BaseModel):
    """422: the issues with the body, or one message for a rule the schema cannot state (a candidate action the
    surface does not offer, an outcome stamped in the future)."""

    detail: list[ValidationIssue] | str


class EventsRefused(BaseModel):
    """422 of /v1/events: the issues with the body, or, when no event was applied and some broke a contract rule,
    what the call did (every event is in `rejected`, with its rule)."""

    detail: list[ValidationIssue] | EventsApplied


class Readiness(BaseModel):
    """/readyz: ready, or the reasons it is not."""

    ready: bool
    problems: list[str]


class ErasureRequest(BaseModel):
    """Erase one user from every store (infra/erasure): their events, features and training rows removed, their
    decisions and outcomes anonymised, their Redis keys deleted and Redis's files rewritten."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"user_id": 42, "reason": "data subject request 1234"}]})

    user_id: UserId
    reason: str = Field(min_length=1, max_length=500, description="Why (kept in the receipt and the audit trail).")


class ErasureReceipt(BaseModel):
    """What an erasure touched: the user's pseudonym (never the raw id), the receipt file, items changed per store."""

    user_key: str
    receipt: str
    touched: dict[str, int]
    seconds: float
