"""A compiled tree scorer for the serving path: the champion's XGBoost boosters as flat numpy arrays.

XGBoost's `inplace_predict` costs ~0.3 ms per call whatever the batch (measured on the demo's 200-tree S-learner),
most of it fixed per-call work, and a learner makes one call per booster. The serving path scores one user (its
rows: one per arm for the S-learner) with trees of depth 2, so the trees are evaluated here directly: every
booster of the learner becomes part of one `Forest` in heap layout (each tree padded to the forest's depth, a leaf
above the bottom copied into every slot below it), and one call walks all trees for all rows, level by level, with
vectorised numpy. The S-learner's rows differ only in their one-hot arm columns, so each tree walks one row per user
and only the trees that split on an arm walk that arm's row (`Forest.one_hot_margins`).

Exactness: the comparisons are XGBoost's (`x < threshold` goes left, a missing value follows the node's default
direction), the thresholds and leaf values are XGBoost's float32 values, and each output's margin is summed in
float32 in XGBoost's order (base margin, then the trees in boosting order), so margins equal XGBoost's bit for bit.
The output transform (`exp` for log-link objectives, the sigmoid for logistic ones) gives the C library's `expf`, as
XGBoost does (vectorised, see `expf`); tests/serving/decision/test_scoring.py holds margins and uplift to XGBoost's bit for bit on random rows with
missing values.

Supported: gbtree boosters with numerical splits, one target, objectives in LINKS; the S-, T- and DR-learners and the
X-learner with g_model="mean". Anything else raises UnsupportedModel and serving keeps XGBoost's path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from training.learners import DRLearner, SLearner, TLearner, TwoPartLearner, XLearner
from training.learners.selection import CausalModelSelector
from training.pyfunc import UpliftModel

log = logging.getLogger(__name__)

# Objective → link of the prediction (XGBoost's PredTransform) and of base_score (its ProbToMargin).
LINKS = {
    "reg:squarederror": "identity",
    "reg:absoluteerror": "identity",
    "reg:pseudohubererror": "identity",
    "reg:tweedie": "log",
    "reg:gamma": "log",
    "count:poisson": "log",
    "binary:logistic": "logit",
    "reg:logistic": "logit",
}
MAX_DEPTH = 10  # the heap layout pads every tree to 2^depth leaves; deeper forests stay on XGBoost


# XGBoost computes in float with the C library's `expf` and `logf`; numpy's float32 exp (SIMD) and a float64 exp
# rounded to float32 each differ from `expf` in the last bit for some inputs (measured: 39 % and 0.1 % of 20,000
# margins), so the same functions are called here: `expf` once per predicted value (a few dozen per decision).
_LIBM = ctypes.CDLL(ctypes.util.find_library("m"))
_EXPF, _LOGF = _LIBM.expf, _LIBM.logf
for _f in (_EXPF, _LOGF):
    _f.restype, _f.argtypes = ctypes.c_float, [ctypes.c_float]


def expf(values: np.ndarray) -> np.ndarray:
    """The C library's single-precision exp of every element (what XGBoost's prediction transforms call).

    Vectorised: exp in float64 rounded to the nearest float32 is what `expf` returns whenever the exact value is not
    within 0.002 ulp of a midpoint between two float32s (glibc's expf is accurate to 0.502 ulp, and float64's exp to
    ~1e-9 float32 ulp), so only elements within 0.01 ulp of a midpoint (about 2 %), and non-normal results, call
    `expf` itself. tests/serving/decision/test_scoring.py holds it to `expf` element for element."""
    x = np.asarray(values, np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # inf and 0 are settled by `expf` below
        exact = np.exp(x.astype(np.float64))
        y = exact.astype(np.float32)
        below = y - np.nextafter(y, np.float32(0.0))  # the smaller of the two ulps around y (y > 0): conservative
        off_midpoint = np.abs(exact - y) / below < 0.49
    checked = off_midpoint & (y >= np.finfo(np.float32).tiny) & np.isfinite(y)
    if not checked.all():
        y = y.copy()
        for index in zip(*np.nonzero(~checked)):
            y[index] = _EXPF(float(x[index]))
    return y


class UnsupportedModel(ValueError):
    """The model uses something the compiled scorer does not implement; score it through XGBoost."""


@dataclass(frozen=True)
class _Tree:
    """One tree in heap layout: node i has children 2i+1 (left) and 2i+2 (right)."""

    feature: np.ndarray  # (2^D − 1,) int64
    threshold: np.ndarray  # (2^D − 1,) float32
    default_left: np.ndarray  # (2^D − 1,) bool
    leaf: np.ndarray  # (2^D,) float32


def _tree_depth(tree: dict) -> int:
    left, right = tree["left_children"], tree["right_children"]
    depth, stack = 0, [(0, 0)]
    while stack:
        node, d = stack.pop()
        if left[node] == -1:
            depth = max(depth, d)
        else:
            stack += [(left[node], d + 1), (right[node], d + 1)]
    return depth


def _heap(tree: dict, depth: int) -> _Tree:
    """Lay `tree` (XGBoost's JSON) out as a complete tree of `depth`; a shallower leaf fills every slot below it."""
    if any(tree["split_type"]) or tree["categories_nodes"]:
        raise UnsupportedModel("categorical splits are not compiled")
    internal = 2**depth - 1
    feature = np.zeros(internal, np.int64)
    threshold = np.full(internal, np.inf, np.float32)
    default_left = np.ones(internal, bool)
    leaf = np.zeros(2**depth, np.float32)
    left, right = tree["left_children"], tree["right_children"]
    conditions = np.asarray(tree["split_conditions"], np.float32)  # a leaf's value is in its split condition
    stack = [(0, 0, 0)]  # (XGBoost node, heap slot, level)
    while stack:
        node, slot, level = stack.pop()
        if left[node] == -1:
            first = slot
            for _ in range(depth - level):
                first = 2 * first + 1
            start = first - internal
            leaf[start:start + 2 ** (depth - level)] = conditions[node]
            continue
        feature[slot] = tree["split_indices"][node]
        threshold[slot] = conditions[node]
        default_left[slot] = bool(tree["default_left"][node])
        stack += [(left[node], 2 * slot + 1, level + 1), (right[node], 2 * slot + 2, level + 1)]
    return _Tree(feature, threshold, default_left, leaf)


def _booster_json(booster: xgb.Booster) -> tuple[dict, str, float]:
    """(the gbtree model, link, base margin) of a booster, or UnsupportedModel."""
    learner = json.loads(booster.save_raw("json"))["learner"]
    booster_kind = learner["gradient_booster"]["name"]
    if booster_kind != "gbtree":
        raise UnsupportedModel(f"booster {booster_kind!r} is not compiled (only gbtree)")
    params = learner["learner_model_param"]
    if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) != 1:
        raise UnsupportedModel("multi-class or multi-target boosters are not compiled")
    objective = learner["objective"]["name"]
    if objective not in LINKS:
        raise UnsupportedModel(f"objective {objective!r} is not compiled; compiled: {sorted(LINKS)}")
    model = learner["gradient_booster"]["model"]
    if int(model["gbtree_model_param"].get("num_parallel_tree", 1)) != 1:
        raise UnsupportedModel("boosted random forests (num_parallel_tree > 1) are not compiled")
    base_score = np.float32(float(params["base_score"].strip("[]")))
    link = LINKS[objective]
    # base_score is stored on the prediction scale; XGBoost starts from its margin (ProbToMargin, in float).
    if link == "log":
        base = _LOGF(float(base_score))
    elif link == "logit":
        base = -_LOGF(float(np.float32(1.0) / base_score - np.float32(1.0)))
    else:
        base = base_score
    return model, link, np.float32(base)


@dataclass(frozen=True)
class _OneHotPlan:
    """Index arrays of `Forest.one_hot_margins` for one shape (users, features, arms)."""

    hot: tuple[np.ndarray, np.ndarray]  # the one-hot cells of the arm rows
    column: np.ndarray  # offset of each node's input column in the flattened input copies
    trees: np.ndarray  # the tree of each walk: every tree per user, then the (tree, arm) pairs per user
    offsets: np.ndarray  # the offset of each walk's row in a copy
    pair_slots: tuple[np.ndarray, np.ndarray]  # where each pair walk's leaf goes in the (1 + trees, n·arms) values


class Forest:
    """The trees of one or several boosters (one output each), evaluated together on a float32 matrix."""

    def __init__(self, boosters: Sequence[xgb.Booster]):
        models = [_booster_json(b) for b in boosters]
        links = {link for _, link, _ in models}
        if len(links) != 1:
            raise UnsupportedModel(f"boosters of one forest must share a link; got {sorted(links)}")
        self.link = links.pop()
        trees = [(k, t) for k, (model, _, _) in enumerate(models) for t in model["trees"]]
        self.depth = max([_tree_depth(t) for _, t in trees] + [1])
        if self.depth > MAX_DEPTH:
            raise UnsupportedModel(f"trees of depth {self.depth} are not compiled (at most {MAX_DEPTH})")
        # Trees in slot order: slot j holds tree j of every output (a tree of zeros where an output has fewer), so
        # the margins are one sum over the slot axis, in float32 and in XGBoost's order (base, tree 0, tree 1, ...).
        per_output = [[t for k, t in trees if k == out] for out in range(len(models))]
        self.n_slots = max(len(ts) for ts in per_output)
        empty = {"left_children": [-1], "right_children": [-1], "split_conditions": [0.0], "split_type": [0],
                 "categories_nodes": []}
        heaps = [
            _heap(ts[j] if j < len(ts) else empty, self.depth) for j in range(self.n_slots) for ts in per_output
        ]
        self.n_outputs = len(models)
        self.n_features = max(int(m["trees"][0]["tree_param"]["num_feature"]) if m["trees"] else 0 for m, _, _ in models)
        self.n_trees = len(heaps)
        self._feature = np.concatenate([h.feature for h in heaps]) if heaps else np.zeros(0, np.int64)
        self._threshold = np.concatenate([h.threshold for h in heaps]) if heaps else np.zeros(0, np.float32)
        # Missing values become −inf (default left: −inf < t) or +inf (default right) in two copies of the input.
        self._copy = (np.concatenate([~h.default_left for h in heaps]) if heaps else np.zeros(0, bool)).astype(np.int64)
        self._leaf = np.concatenate([h.leaf for h in heaps]) if heaps else np.zeros(0, np.float32)
        self._internal = 2**self.depth - 1
        self._plans: dict[tuple[int, int, int], _OneHotPlan] = {}
        self._base = np.array([base for _, _, base in models], np.float32)

    @staticmethod
    def _inputs(X: np.ndarray) -> np.ndarray:
        """X twice, flattened: missing values as −inf in the first copy (they go left) and +inf in the second."""
        both = np.empty((2, *X.shape), np.float32)
        np.copyto(both[0], X)
        np.copyto(both[1], X)
        missing = np.isnan(X)
        if missing.any():
            both[0][missing] = -np.inf
            both[1][missing] = np.inf
        return both.reshape(-1)

    def _walk(self, flat: np.ndarray, column: np.ndarray, trees: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Leaf value of each walk: tree `trees[k]` from its root on the row at `offsets[k]` of `flat`, where
        `column[node]` is the offset of the node's input column (its copy chosen by the default direction)."""
        root = trees * self._internal
        right = flat[column[root] + offsets] >= self._threshold[root]
        position = 1 + right
        for _ in range(1, self.depth):
            node = root + position
            right = flat[column[node] + offsets] >= self._threshold[node]
            position = 2 * position + 1 + right
        return self._leaf[trees * 2**self.depth - self._internal + position]

    def _sum(self, leaves: np.ndarray) -> np.ndarray:
        """Margins (n, n_outputs) from the leaf values (n_trees, n) of every tree on every row."""
        n = leaves.shape[1]
        values = np.empty((1 + self.n_slots, self.n_outputs, n), np.float32)
        values[0] = self._base[:, None]
        values[1:] = leaves.reshape(self.n_slots, self.n_outputs, n)
        return values.sum(axis=0).T  # a reduction over the outer axis adds slot by slot (no pairwise summation)

    def margins(self, X: np.ndarray) -> np.ndarray:
        """Margin of every output for every row, shape (n, n_outputs), float32, equal to XGBoost's."""
        X = np.asarray(X, np.float32)
        n, width = X.shape
        if width < self.n_features:
            raise ValueError(f"X has {width} features; the boosters use {self.n_features}")
        column = self._copy * (n * width) + self._feature
        trees = np.arange(self.n_trees)[:, None]
        return self._sum(self._walk(self._inputs(X), column, trees, (np.arange(n) * width)[None, :]))

    def one_hot_margins(self, features: np.ndarray, arms: int) -> np.ndarray:
        """`margins` of the rows [features_i, one-hot(a)] for every row i and arm a (row i·arms + a), with the arm
        columns right after the features, as the S-learner builds them; with far fewer tree walks.

        Tree t's leaf for arm a is its leaf on [features_i, 0…0] unless the tree splits on a's column, so every tree
        walks one row per user and only the (tree, arm) pairs that split on the arm walk that arm's row: for the
        50-action bench model 200 + 154 walks instead of 10,000, in one pass whose index arrays are planned once per
        shape. Equal to `margins` of the built rows bit for bit (the same leaves, summed in the same float32 order)."""
        features = np.asarray(features, np.float32)
        n, width = features.shape
        if width + arms < self.n_features:
            raise ValueError(f"features and arms give {width + arms} columns; the boosters use {self.n_features}")
        plan = self._one_hot_plan(n, width, arms)
        rows = np.zeros((n * (1 + arms), width + arms), np.float32)  # n base rows, then row n + i·arms + a
        rows[:n, :width] = features
        rows[n:, :width] = np.repeat(features, arms, axis=0)
        rows[plan.hot] = 1.0
        leaves = self._walk(self._inputs(rows), plan.column, plan.trees, plan.offsets)
        values = np.empty((1 + self.n_trees, n * arms), np.float32)
        values[0] = self._base[0]
        values[1:] = np.repeat(leaves[: self.n_trees * n].reshape(self.n_trees, n), arms, axis=1)
        values[plan.pair_slots] = leaves[self.n_trees * n:]
        return values.sum(axis=0)[:, None]  # one output: slot by slot, base first, as `_sum`

    def _one_hot_plan(self, n: int, width: int, arms: int) -> _OneHotPlan:
        key = (n, width, arms)
        plan = self._plans.get(key)
        if plan is None:
            if self.n_outputs != 1:
                raise UnsupportedModel("one-hot margins need a forest of one output (the S-learner's)")
            if len(self._plans) >= 8:  # shapes of batch calls: keep a few
                self._plans.clear()
            nodes = self._feature.reshape(self.n_trees, self._internal)
            real = np.isfinite(self._threshold.reshape(self.n_trees, self._internal))  # padding splits on nothing
            tree_index, node = np.nonzero(real & (nodes >= width) & (nodes < width + arms))
            pairs = sorted({(int(t), int(nodes[t, k]) - width) for t, k in zip(tree_index, node)})
            pair_trees = np.array([t for t, _ in pairs], np.int64)
            pair_arms = np.array([a for _, a in pairs], np.int64)
            users = np.arange(n)
            pair_columns = users[None, :] * arms + pair_arms[:, None]  # (P, n): column of (user, arm) in the output
            base_rows = np.broadcast_to(users[None, :], (self.n_trees, n))
            base_trees = np.broadcast_to(np.arange(self.n_trees)[:, None], (self.n_trees, n))
            trees = np.concatenate([base_trees.ravel(), np.repeat(pair_trees, n)])
            walk_rows = np.concatenate([base_rows.ravel(), (n + pair_columns).ravel()])
            hot_rows = n + np.arange(n * arms)
            plan = self._plans[key] = _OneHotPlan(
                hot=(hot_rows, width + np.tile(np.arange(arms), n)),
                column=self._copy * (n * (1 + arms) * (width + arms)) + self._feature,
                trees=trees,
                offsets=walk_rows * (width + arms),
                pair_slots=(1 + np.repeat(pair_trees, n), pair_columns.ravel()),
            )
        return plan

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Prediction of every output (XGBoost's transformed scale), shape (n, n_outputs), float32."""
        return self.transform(self.margins(X))

    def transform(self, margin: np.ndarray) -> np.ndarray:
        """Margins to XGBoost's prediction scale (its PredTransform for the forest's link)."""
        if self.link == "log":
            return expf(margin)
        if self.link == "logit":  # XGBoost's sigmoid: 1 / (1 + expf(−x)) in float32
            return np.float32(1.0) / (np.float32(1.0) + expf(-margin))
        return margin


def _boosters(models: Sequence[object]) -> list[xgb.Booster]:
    return [m.get_booster() for m in models]


class CompiledUplift:
    """`UpliftModel.uplift` of a supported learner, with its boosters compiled into one Forest."""

    def __init__(self, model: UpliftModel):
        self.model = model
        learner = model.learner
        if isinstance(learner, CausalModelSelector) and learner.strategy == "select":
            learner = learner.best_estimator_  # a selection answers with its winner alone
        if getattr(learner, "base_model", "xgboost") != "xgboost":
            raise UnsupportedModel(f"learner {type(learner).__name__} on a {learner.base_model} base has no boosters")
        self.kind = type(learner).__name__
        self.n_features = len(model.feature_names)
        if isinstance(learner, SLearner):
            self.forest = Forest(_boosters([learner.model_]))
            self.arms = len(learner.arms_)
        elif isinstance(learner, TwoPartLearner):  # P(purchase) and E[amount | purchase]: two S-learner layouts
            self.forest = Forest(_boosters([learner.purchase_model_]))
            self.value_forest = Forest(_boosters([learner.value_model_]))
            self.arms = len(learner.arms_)
        elif isinstance(learner, TLearner):
            self.forest = Forest(_boosters([learner.models_[a] for a in learner.arms_]))
        elif isinstance(learner, DRLearner):
            self.forest = Forest(_boosters([learner.effect_models_[a] for a in learner.treatments_]))
        elif isinstance(learner, XLearner) and learner.g_model == "mean":
            self.forest = Forest(_boosters(
                [learner.effect_models_control_[a] for a in learner.treatments_]
                + [learner.effect_models_treated_[a] for a in learner.treatments_]
            ))
            self.g = np.array([learner.g_[a] for a in learner.treatments_])
        else:
            raise UnsupportedModel(f"learner {self.kind} (as configured) is not compiled")

    def predict_uplift(self, features: np.ndarray) -> np.ndarray:
        """The learner's predict_uplift, shape (n, K), columns in `treatments_` order."""
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"features must be (n, {self.n_features}); got shape {features.shape}")
        if self.kind == "SLearner":
            margins = self.forest.one_hot_margins(features, self.arms)
            outcomes = self.forest.transform(margins).reshape(len(features), self.arms)
            return outcomes[:, 1:] - outcomes[:, :1]
        if self.kind == "TwoPartLearner":  # as TwoPartLearner.predict_outcomes: purchase (float64) × amount
            shape = (len(features), self.arms)
            purchase = self.forest.transform(self.forest.one_hot_margins(features, self.arms)).reshape(shape)
            amount = self.value_forest.transform(self.value_forest.one_hot_margins(features, self.arms)).reshape(shape)
            outcomes = purchase.astype(np.float64) * amount
            return outcomes[:, 1:] - outcomes[:, :1]
        predictions = self.forest.predict(features)
        if self.kind == "TLearner":
            return predictions[:, 1:] - predictions[:, :1]
        if self.kind == "DRLearner":
            return predictions
        k = len(self.g)  # XLearner: g·τ⁰ + (1 − g)·τ¹
        return self.g * predictions[:, :k] + (1.0 - self.g) * predictions[:, k:]

    def uplift(self, features: np.ndarray) -> np.ndarray:
        """Same as UpliftModel.uplift: predicted uplift, recalibrated when the model carries a recalibrator."""
        uplift = self.predict_uplift(features)
        recalibrator = self.model.recalibrator
        return uplift if recalibrator is None else recalibrator.transform(uplift)


def scorer(model: UpliftModel) -> Callable[[np.ndarray], np.ndarray]:
    """The fastest exact uplift function for `model`: the compiled forest, or XGBoost's path (logged) when the
    learner or its boosters are not supported."""
    try:
        return CompiledUplift(model).uplift
    except UnsupportedModel as exc:
        log.warning("scoring %s through XGBoost (not compiled: %s)", type(model.learner).__name__, exc)
        return model.uplift


class CompiledUpliftSd:
    """`UpliftModel.uplift_sd` of a model with an uncertainty model: its booster compiled into one Forest and
    walked as the S-learner's (rows [features, one-hot(treatment)], `Forest.one_hot_margins`), bit for bit."""

    def __init__(self, model: UpliftModel):
        self.forest = Forest([model.uplift_sd_model.get_booster()])
        if self.forest.link != "identity":
            raise UnsupportedModel(f"the uncertainty model predicts log σ on an identity link; got {self.forest.link}")
        self.arms = len(model.treatments)
        self.n_features = len(model.feature_names)

    def uplift_sd(self, features: np.ndarray) -> np.ndarray:
        """σ of each treatment's uplift for every row, shape (n, K), float64."""
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"features must be (n, {self.n_features}); got shape {features.shape}")
        log_sd = self.forest.one_hot_margins(features, self.arms).reshape(len(features), self.arms)
        return np.exp(log_sd.astype(np.float64))


def sd_scorer(model: UpliftModel) -> Callable[[np.ndarray], np.ndarray] | None:
    """The per-user uncertainty function of `model` (compiled, or XGBoost's path, logged, when not supported), or
    None when the model has no uncertainty model (serving then uses the constant `uplift_se`)."""
    if getattr(model, "uplift_sd_model", None) is None:
        return None
    try:
        return CompiledUpliftSd(model).uplift_sd
    except UnsupportedModel as exc:
        log.warning("scoring the uncertainty model through XGBoost (not compiled: %s)", exc)
        return model.uplift_sd
