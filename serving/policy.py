"""The decision policy: eligibility, consent, greedy on expected net uplift, epsilon-greedy exploration.

Every eligible action gets probability ε/K; the greedy one gets 1 − ε on top. The probability returned is the
exact probability of the chosen action under this policy, which off-policy evaluation needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Choice:
    """The chosen action, its score and probability, and the full distribution it was drawn from."""

    action_id: str
    score: float
    propensity: float
    probabilities: dict[str, float]


def eligible_actions(all_actions: list[str], control: str, consent_marketing: bool, candidates: list[str] | None) -> list[str]:
    """Actions that may be shown: the candidates (or all), only the control without marketing consent."""
    allowed = [a for a in all_actions if candidates is None or a in candidates]
    if not consent_marketing:
        allowed = [a for a in allowed if a == control]
    return allowed


def choose(scores: dict[str, float], epsilon: float, rng: np.random.Generator) -> Choice:
    """Epsilon-greedy over `scores` (action → expected incremental net value); ties go to the first listed."""
    if not scores:
        raise ValueError("no eligible action to choose from")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1]; got {epsilon}")
    actions = list(scores)
    values = np.array([scores[a] for a in actions])
    probabilities = np.full(len(actions), epsilon / len(actions))
    probabilities[int(np.argmax(values))] += 1.0 - epsilon
    index = int(rng.choice(len(actions), p=probabilities))
    return Choice(
        action_id=actions[index],
        score=float(values[index]),
        propensity=float(probabilities[index]),
        probabilities={a: float(p) for a, p in zip(actions, probabilities)},
    )
