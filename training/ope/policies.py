"""Builders of `action_dist` (n_rounds, n_actions, len_list) over a global action vocabulary `action_ids`.

- `convert_to_action_dist`: OBP's: a deterministic policy's chosen action per round and slot → one-hot.
- `action_dist_from_candidates`: the decision service's logged distribution. A decision record holds `candidates`
  (the K_i eligible action ids of round i, K_i varying) and `probabilities` (slot 1's probability of each); the row
  of action_dist puts that probability on the candidate's column and 0 on every action that was not a candidate.
- `action_dist_from_scores` and its two shorthands: a target policy that scores round i's candidates s_i and
  explores exactly as the decision service does — `serving.policy.exploration.action_probabilities` is called, so
  the formulas are the service's own (module docstring there):
      epsilon_greedy  p_j = ε/K_i + (1 − ε)·[j = first argmax s]
      softmax         p_j = f + (1 − K_i·f)·exp((s_j − max s)/T) / Σ exp((s_l − max s)/T),   f = min(floor, 1/K_i)
      thompson        p_j = f + (1 − K_i·f)·share of the M fixed normal rows Z where j = argmax (s + σ_i·Z)
  (thompson reads each candidate's uncertainty σ, `spreads`: the same common normals as serving, so the same p).
- `bandit_feedback_from_decisions`: decision records → action (index of chosen[0]), pscore (chosen_probabilities[0])
  and pi_b (the logged slot-1 action_dist), after checking that the two logged probabilities agree; a record served
  after a reservation redraw (`redraws` > 0: not randomized as logged) is refused, as logged_training leaves it out.
- `bernoulli_ts_action_dist`: OBP's `BernoulliTS.compute_batch_action_dist` for a context-free Thompson sampling
  policy with Beta(α_a, β_a) posteriors: n_sim Monte Carlo draws θ ~ Beta(α, β) (one vector of n_actions per draw,
  from `np.random.RandomState(random_state)` in OBP's order), the actions ranked by θ descending, and
  P(action a at slot k) = #{draws where a is ranked k-th} / n_sim, the same for every round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from serving.policy.exploration import Exploration, action_probabilities

DECISION_FIELDS = frozenset({"candidates", "probabilities", "chosen", "chosen_probabilities"})
PROBABILITY_TOLERANCE = 1e-9  # logged probabilities of one decision may disagree by rounding only


def convert_to_action_dist(n_actions: int, selected_actions: np.ndarray) -> np.ndarray:
    """One-hot action_dist (n_rounds, n_actions, len_list) of `selected_actions` (n_rounds, len_list), as OBP."""
    selected = np.asarray(selected_actions)
    if selected.ndim != 2 or not np.issubdtype(selected.dtype, np.integer):
        raise ValueError(f"selected_actions must be a 2-D int array (n_rounds, len_list); got {selected.shape}")
    if selected.size and (selected.min() < 0 or selected.max() >= n_actions):
        raise ValueError(f"selected_actions must be action indices in [0, {n_actions})")
    n_rounds, len_list = selected.shape
    action_dist = np.zeros((n_rounds, n_actions, len_list))
    for slot in range(len_list):
        action_dist[np.arange(n_rounds), selected[:, slot], slot] = 1.0
    return action_dist


def action_index(action_ids: Sequence[str]) -> dict[str, int]:
    """{action id: column} of a vocabulary of distinct ids."""
    index = {str(a): i for i, a in enumerate(action_ids)}
    if len(index) != len(action_ids):
        raise ValueError("action_ids must be distinct")
    return index


def _columns(candidates: Sequence[str], index: Mapping[str, int], row: int) -> np.ndarray:
    """Columns of one round's candidates; unknown or repeated ids raise a ValueError naming the round."""
    names = [str(c) for c in candidates]
    unknown = sorted({c for c in names if c not in index})
    if unknown:
        raise ValueError(f"round {row}: candidates {unknown} are not in action_ids; add them to the vocabulary")
    if len(set(names)) != len(names):
        raise ValueError(f"round {row}: candidates repeat an action id: {names}")
    if not names:
        raise ValueError(f"round {row}: no candidates; a decision without candidates has no distribution")
    return np.fromiter((index[c] for c in names), dtype=np.int64, count=len(names))


def action_dist_from_candidates(
    candidates: Sequence[Sequence[str]], probabilities: Sequence[Sequence[float]], action_ids: Sequence[str]
) -> np.ndarray:
    """(n, len(action_ids), 1): each round's candidate probabilities on their columns, 0 for non-candidates."""
    if len(candidates) != len(probabilities):
        raise ValueError(f"candidates and probabilities differ in length ({len(candidates)} vs {len(probabilities)})")
    index = action_index(action_ids)
    dist = np.zeros((len(candidates), len(index), 1))
    for row, (names, probs) in enumerate(zip(candidates, probabilities, strict=True)):
        columns = _columns(names, index, row)
        p = np.asarray(probs, dtype=float)
        if p.shape != columns.shape:
            raise ValueError(f"round {row}: {len(columns)} candidates but {p.size} probabilities")
        if not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1.0) > 1e-6:
            raise ValueError(f"round {row}: probabilities must be finite, >= 0 and sum to 1; got {p.tolist()}")
        dist[row, columns, 0] = p
    return dist


def action_dist_from_scores(
    candidates: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]],
    action_ids: Sequence[str],
    exploration: Exploration,
    spreads: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """(n, len(action_ids), 1): the service's exploration distribution of each round's candidate scores (and, for
    thompson, of their uncertainties σ, `spreads`, one list per round)."""
    if len(candidates) != len(scores):
        raise ValueError(f"candidates and scores differ in length ({len(candidates)} vs {len(scores)})")
    if spreads is not None and len(spreads) != len(scores):
        raise ValueError(f"spreads and scores differ in length ({len(spreads)} vs {len(scores)})")
    index = action_index(action_ids)
    dist = np.zeros((len(candidates), len(index), 1))
    for row, (names, values) in enumerate(zip(candidates, scores, strict=True)):
        columns = _columns(names, index, row)
        s = np.asarray(values, dtype=float)
        if s.shape != columns.shape:
            raise ValueError(f"round {row}: {len(columns)} candidates but {s.size} scores")
        try:
            dist[row, columns, 0] = action_probabilities(s, exploration, None if spreads is None else spreads[row])
        except ValueError as error:
            raise ValueError(f"round {row}: {error}") from error
    return dist


def epsilon_greedy_action_dist(
    candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], action_ids: Sequence[str], epsilon: float
) -> np.ndarray:
    """Epsilon-greedy over each round's candidates, exactly as the service (ε = 0: greedy, deterministic)."""
    return action_dist_from_scores(candidates, scores, action_ids, Exploration("epsilon_greedy", epsilon=epsilon))


def softmax_action_dist(
    candidates: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]],
    action_ids: Sequence[str],
    temperature: float = 1.0,
    floor: float = 0.0,
) -> np.ndarray:
    """Softmax with a probability floor over each round's candidates, exactly as the service."""
    exploration = Exploration("softmax", temperature=temperature, floor=floor)
    return action_dist_from_scores(candidates, scores, action_ids, exploration)


def bandit_feedback_from_decisions(
    records: pd.DataFrame | Iterable[Mapping[str, object]], action_ids: Sequence[str]
) -> dict[str, object]:
    """Decision records → {"n_rounds", "n_actions", "action", "position", "pscore", "pi_b"} for slot 1."""
    rows = records.to_dict("records") if isinstance(records, pd.DataFrame) else list(records)
    for row, record in enumerate(rows):
        missing = DECISION_FIELDS - set(record)
        if missing:
            raise ValueError(f"round {row}: the decision record lacks {sorted(missing)}")
        redraws = record.get("redraws")
        if redraws is not None and not pd.isna(redraws) and int(redraws) > 0:
            raise ValueError(
                f"round {row}: served after {int(redraws)} reservation redraw(s): its probabilities are conditional on "
                "concurrent requests, not a propensity; leave such records out (training.logged_training does)"
            )
    candidates = [list(r["candidates"]) for r in rows]
    pi_b = action_dist_from_candidates(candidates, [list(r["probabilities"]) for r in rows], action_ids)
    index = action_index(action_ids)
    action = np.empty(len(rows), dtype=np.int64)
    pscore = np.empty(len(rows))
    for row, record in enumerate(rows):
        chosen, chosen_p = list(record["chosen"]), list(record["chosen_probabilities"])
        if not chosen or len(chosen_p) < 1:
            raise ValueError(f"round {row}: no chosen action; drop decisions that showed nothing")
        if str(chosen[0]) not in candidates[row]:
            raise ValueError(f"round {row}: chosen {chosen[0]!r} is not among its candidates {candidates[row]}")
        action[row] = index[str(chosen[0])]
        pscore[row] = float(chosen_p[0])
        logged = pi_b[row, action[row], 0]
        if abs(logged - pscore[row]) > PROBABILITY_TOLERANCE:
            raise ValueError(
                f"round {row}: chosen_probabilities[0] = {pscore[row]!r} but probabilities gives {logged!r} for "
                f"{chosen[0]!r}; the record is inconsistent"
            )
    return {
        "n_rounds": len(rows), "n_actions": len(index), "action": action,
        "position": np.zeros(len(rows), dtype=int), "pscore": pscore, "pi_b": pi_b,
    }


def bernoulli_ts_action_dist(
    alpha: Sequence[float],
    beta: Sequence[float],
    len_list: int = 1,
    n_rounds: int = 1,
    n_sim: int = 100000,
    random_state: int | None = None,
) -> np.ndarray:
    """OBP's BernoulliTS(...).compute_batch_action_dist(n_rounds, n_sim): Monte Carlo slot probabilities, tiled."""
    a, b = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"alpha and beta must be 1-D of equal length >= 2 (one per action); got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all() and (a > 0).all() and (b > 0).all()):
        raise ValueError("alpha and beta must be finite and > 0 (Beta posterior parameters)")
    if not 1 <= len_list <= a.size:
        raise ValueError(f"len_list must be in [1, n_actions = {a.size}]; got {len_list}")
    if n_sim < 1 or n_rounds < 1:
        raise ValueError(f"n_sim and n_rounds must be >= 1; got {n_sim}, {n_rounds}")
    random_ = check_random_state(random_state)
    counts = np.zeros((a.size, len_list))
    per_batch = max(1, 2_000_000 // a.size)
    for start in range(0, int(n_sim), per_batch):
        size = min(per_batch, int(n_sim) - start)
        # One Beta vector per simulated round, in the order OBP's loop draws them (random_.beta(a, b) per round).
        theta = random_.beta(a, b, size=(size, a.size))
        ranked = np.argsort(theta, axis=1)[:, ::-1][:, :len_list]  # OBP: argsort()[::-1][:len_list]
        for slot in range(len_list):
            counts[:, slot] += np.bincount(ranked[:, slot], minlength=a.size)
    return np.tile(counts / n_sim, (int(n_rounds), 1, 1))
