"""Request and response bodies of the decision API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DecisionRequest(BaseModel):
    """Ask for the best action for one user on one surface."""

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=0, description="The shopper's id (the Feast `user` entity key).")
    surface: str = Field(min_length=1, max_length=64, description="Where the action will be shown, e.g. 'home'.")
    context: dict[str, Any] | None = Field(default=None, description="Request context (device, page, ...).")
    candidates: list[str] | None = Field(
        default=None, min_length=1, max_length=100, description="Restrict the choice to these action ids."
    )


class ScoredAction(BaseModel):
    """A chosen action, its expected incremental net value and the probability the policy chose it with."""

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
    actions: list[ScoredAction]
    model: ModelRef | None
    feature_service: str | None
    fallback: str | None = Field(description="Why the policy was not followed (null when it was).")
