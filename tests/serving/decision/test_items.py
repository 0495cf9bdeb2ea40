"""Item recommendations through the decision service, on real Redis and real Feast: candidates from the ANN index
(equal to exact search on a small index), exclusions and per-item caps never broken (under concurrency too), the
logged slot probabilities are the draw's, users without a vector get popular items, a missing index says what to
materialize, and a new index version is swapped in while decisions keep coming, without a failed request."""

import json
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import redis

from feature_repo.embeddings import EMBEDDING_DIM, USER_EMBEDDING_TABLE, user_embedding_rows
from feature_repo.pseudonyms import pseudonymize_ids
from feature_repo.store import feature_store
from serving.core.runtime import build_runtime
from serving.core.schemas import DecisionRequest
from serving.decision.candidates import ItemIndex, current_version, published_versions
from serving.decision.identity import user_key
from serving.decision.items import INDEX_MODEL_NAME, item_action, item_of
from serving.decision.service import (
    ITEM_INDEX_MISSING, NO_USER_VECTOR, POPULAR_ITEMS, BadCandidates, UnknownSurface,
)
from serving.decision.surfaces import PolicyConfigError, load_policy_config
from serving.policy.exploration import Exploration, action_probabilities
from simulator import build_shop
from tests.lake_ids import door
from tests.serving.conftest import REGIONS, RELAXED, SHOP, SURFACES, write_policy_dir

N_ITEMS = 40
ITEM_IDS = np.arange(1000, 1000 + N_ITEMS)
TEMPERATURE = 0.5


WITH_VECTOR_ALL = list(range(150))  # users 150.. have no vector
# Users of the standard bundle (south, west) with marketing consent, which every action, item or not, needs there.
_USERS = build_shop(SHOP).users
_OK = _USERS.loc[_USERS["consent_marketing"] & _USERS["region"].isin(["south", "west"]), "user_id"].tolist()
WITH_VECTOR = [u for u in _OK if u < 150]
WITHOUT_VECTOR = [u for u in _OK if u >= 150]
NO_CONSENT = [u for u in _USERS.loc[~_USERS["consent_marketing"], "user_id"].tolist() if u < 150]


def item_vectors(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N_ITEMS, EMBEDDING_DIM)).astype(np.float32)


def publish(root, seed: int, popularity: np.ndarray | None = None) -> str:
    popularity = np.arange(N_ITEMS, dtype=float)[::-1] if popularity is None else popularity  # item 1000 most popular
    return ItemIndex.build(ITEM_IDS, item_vectors(seed), popularity=popularity).publish(root)


@pytest.fixture(scope="module")
def item_world(served_world, tmp_path_factory):
    """The served world with user vectors for users 0..149 materialized into Redis (keyed by their pseudonyms, as
    the pipeline writes them), and a published item index; `user_vectors` by raw id (what requests carry)."""
    settings, redis_url, users = served_world
    vectors = np.random.default_rng(7).normal(size=(len(WITH_VECTOR_ALL), EMBEDDING_DIM)).astype(np.float32)
    stamp = pd.Timestamp("2024-01-01", tz="UTC")
    rows = user_embedding_rows(pseudonymize_ids(np.array(WITH_VECTOR_ALL), door(settings)), vectors, stamp)
    path = settings.data_dir / USER_EMBEDDING_TABLE
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(path, index=False)
    store = feature_store(redis_url, settings)
    store.materialize(stamp.to_pydatetime(), (stamp + pd.Timedelta(seconds=1)).to_pydatetime(),
                      feature_views=["user_embedding_fv"])
    root = tmp_path_factory.mktemp("item_index")
    version = publish(root, seed=1)
    return {"root": root, "version": version, "user_vectors": dict(zip(WITH_VECTOR_ALL, vectors))}


def item_surface(root, **changes) -> dict:
    ann = {"k": 10, "index_dir": str(root), "refresh_s": 0, **changes.pop("ann", {})}
    return {
        "name": "items", "feature_service": "candidates_v1", "candidates": {"source": "ann_items", "ann": ann},
        "slate_size": 3, "exploration": {"method": "softmax", "temperature": TEMPERATURE}, "deadlines": RELAXED,
        **changes,
    }


def clear_item_caps(url: str) -> None:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter("hyperlift:item_caps:*"):
        client.delete(key)


@pytest.fixture
def build(serving_settings, tmp_path, item_world):
    """build(**surface changes) → a runtime serving SURFACES plus the `items` surface."""
    runtimes = []
    clear_item_caps(serving_settings.redis_url)

    def _build(root=None, regions=REGIONS, **changes):
        surfaces = {**SURFACES, "items": item_surface(root or item_world["root"], **changes)}
        policy = write_policy_dir(tmp_path / f"policy{len(runtimes)}", surfaces=surfaces, regions=regions)
        serving_settings.config_dir, serving_settings.experiments_file = policy, policy / "experiments.yaml"
        serving_settings.redis_timeout_ms = 2000.0  # 2 busy cores: no Redis-timeout fallbacks in exact counts
        runtimes.append(build_runtime(serving_settings))
        return runtimes[-1]

    yield _build
    for runtime in runtimes:
        runtime.stop()
    clear_item_caps(serving_settings.redis_url)


def last_records(settings, n: int) -> list[dict]:
    stream = redis.Redis.from_url(settings.redis_url)
    return [json.loads(fields[b"record"]) for _, fields in stream.xrevrange(settings.decision_stream, count=n)][::-1]


def decide(runtime, user: int, surface: str = "items"):
    return runtime.service.decide(DecisionRequest(user_id=user, surface=surface))


def test_ann_candidates_equal_exact_search_on_a_small_index(item_world):
    index = ItemIndex.load(item_world["root"])
    for vector in item_world["user_vectors"].values():
        for k in (1, 10, N_ITEMS):
            ann_ids, ann_scores = index.top_k(vector, k)
            exact_ids, exact_scores = index.exact_top_k(vector, k)
            np.testing.assert_array_equal(ann_ids, exact_ids)
            np.testing.assert_allclose(ann_scores, exact_scores, rtol=1e-5, atol=1e-5)


def test_a_decision_serves_the_exact_top_k_drawn_and_logged_as_the_softmax_over_inner_products(
    build, item_world, serving_settings
):
    runtime = build()
    index = ItemIndex.load(item_world["root"])
    users = WITH_VECTOR[:20]
    responses = [decide(runtime, u) for u in users]
    runtime.service.trace.flush()
    records = last_records(serving_settings, len(users))
    for user, response, record in zip(users, responses, records):
        exact_ids, exact_scores = index.exact_top_k(item_world["user_vectors"][user], 10)
        assert record["candidates"] == [item_action(i) for i in exact_ids]
        np.testing.assert_allclose(record["scores"], exact_scores, rtol=1e-5, atol=1e-5)
        assert record["model_name"] == INDEX_MODEL_NAME and record["model_version"] == item_world["version"]
        assert record["feature_service"] == "candidates_v1" and record["fallback"] is None
        assert response.model.version == item_world["version"] and response.fallback is None
        chosen = [a.action_id for a in response.actions]
        assert record["chosen"] == chosen and len(chosen) == 3 and len(set(chosen)) == 3
        assert record["positions"] == [0, 1, 2]
        # Each slot's distribution is the softmax over the candidates not yet chosen; the logged pick probability
        # is the chosen one's share of it.
        pool = list(record["candidates"])
        scores = dict(zip(record["candidates"], record["scores"]))
        for slot, action in enumerate(chosen):
            softmax = Exploration("softmax", temperature=TEMPERATURE)
            expected = action_probabilities(np.array([scores[a] for a in pool]), softmax)
            logged = [record["slot_probabilities"][slot][record["candidates"].index(a)] for a in pool]
            np.testing.assert_allclose(logged, expected, rtol=1e-12)
            assert record["chosen_probabilities"][slot] == pytest.approx(expected[pool.index(action)], rel=1e-12)
            pool.remove(action)
        assert response.slate_propensity == pytest.approx(np.prod(record["chosen_probabilities"]))


def test_rank_top_draws_and_logs_only_the_best_eligible_candidates(build, item_world, serving_settings):
    user = WITH_VECTOR[2]
    exact_ids, _ = ItemIndex.load(item_world["root"]).exact_top_k(item_world["user_vectors"][user], 30)
    runtime = build(ann={"k": 30, "rank_top": 5, "exclude_items": [int(exact_ids[1])]})
    response = decide(runtime, user)
    runtime.service.trace.flush()
    record = last_records(serving_settings, 1)[0]
    assert record["decision_id"] == response.decision_id
    assert record["candidates"] == [item_action(i) for i in [exact_ids[0], *exact_ids[2:6]]]
    assert all(len(slot) == 5 for slot in record["slot_probabilities"]) and len(response.actions) == 3


def test_excluded_and_capped_items_are_never_served(build, serving_settings):
    excluded = [1000, 1001, 1002, 1003, 1004]
    runtime = build(ann={"k": N_ITEMS, "exclude_items": excluded},
                    item_caps=[{"name": "once_a_day", "window_s": 86400, "limit": 1}])
    user = WITH_VECTOR[0]
    served: list[str] = []
    for _ in range(20):
        served += [a.action_id for a in decide(runtime, user).actions]
    items = [item_of(a) for a in served if a != "no_action"]
    assert len(items) == N_ITEMS - len(excluded)  # every eligible item once, then nothing is left
    assert set(items) == set(ITEM_IDS) - set(excluded) and len(set(items)) == len(items)
    assert served[-1] == "no_action"
    caps = runtime.service.items["items"].caps
    assert caps.capped(user_key(user, serving_settings.hash_salt)) == set(items)


def test_a_per_item_cap_holds_under_8_concurrent_clients_for_one_user(build):
    runtime = build(ann={"k": N_ITEMS}, item_caps=[{"name": "twice_a_day", "window_s": 86400, "limit": 2}])
    user = WITH_VECTOR[1]
    shown: Counter[int] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def client() -> None:
        barrier.wait()
        try:
            for _ in range(12):
                actions = [a.action_id for a in decide(runtime, user).actions]
                with lock:
                    shown.update(item_of(a) for a in actions if a != "no_action")
        except BaseException as exc:  # noqa: BLE001 - recorded and re-raised by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and max(shown.values()) <= 2  # 96 slates asked for 288 shows of 40 items
    while (actions := [a.action_id for a in decide(runtime, user).actions]) != ["no_action"]:  # what is left
        shown.update(item_of(a) for a in actions)
    assert shown == Counter({item: 2 for item in ITEM_IDS})


def test_a_user_without_a_vector_gets_the_most_popular_eligible_items_counted(build, serving_settings):
    runtime = build(ann={"exclude_items": [1001]})
    response = decide(runtime, WITHOUT_VECTOR[0])
    assert [a.action_id for a in response.actions] == [item_action(i) for i in (1000, 1002, 1003)]
    assert [a.propensity for a in response.actions] == [1.0, 1.0, 1.0] and response.fallback == POPULAR_ITEMS
    assert runtime.service.metrics.fallbacks.labels("items", POPULAR_ITEMS)._value.get() == 1.0
    without = build(ann={"popular_fallback": False})
    response = decide(without, WITHOUT_VECTOR[1])
    assert [a.action_id for a in response.actions] == ["no_action"] and response.fallback == NO_USER_VECTOR


def test_a_missing_index_serves_the_neutral_action_and_says_which_asset_to_materialize(
    build, tmp_path, caplog
):
    root = tmp_path / "no_index_yet"
    with pytest.raises(FileNotFoundError, match="materialize the item_user_embeddings asset"):
        ItemIndex.load(root)
    runtime = build(root=root)
    assert "materialize the item_user_embeddings asset" in caplog.text
    response = decide(runtime, WITH_VECTOR[0])
    assert [a.action_id for a in response.actions] == ["no_action"] and response.fallback == ITEM_INDEX_MISSING
    assert decide(runtime, 0, "home").actions  # the other surfaces serve as before
    version = publish(root, seed=2)
    holder = runtime.service.items["items"].holder
    assert holder.refresh() is True and holder.refresh() is False
    response = decide(runtime, WITH_VECTOR[0])
    assert response.fallback is None and response.model.version == version


def test_a_new_index_version_is_swapped_in_while_deciding_without_a_failed_request(build, tmp_path, serving_settings):
    root = tmp_path / "swapping"
    first = publish(root, seed=3)
    runtime = build(root=root)
    holder = runtime.service.items["items"].holder
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def client(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                response = decide(runtime, WITH_VECTOR[i % len(WITH_VECTOR)])
                assert response.fallback is None and len(response.actions) == 3, response
                seen.append(response.model.version)
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test below
                errors.append(exc)
                return
            i += 4

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    published = [first]
    for seed in range(4, 9):  # five new versions, each loaded and swapped while the clients decide
        published.append(publish(root, seed=seed))
        assert holder.refresh() is True
        assert holder.served.version == published[-1]
        waited = 0
        while published[-1] not in seen[-8:] and not errors and waited < 60_000:  # decisions now use the new one
            time.sleep(0.001)
            waited += 1
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors and len(seen) > 0
    assert set(seen) <= set(published) and published[-1] in seen
    assert published_versions(root) == published[-3:]  # the older versions were pruned
    assert current_version(root) == published[-1]
    assert runtime.service.metrics.item_index_swaps.labels("items")._value.get() == 6.0
    response = decide(runtime, WITH_VECTOR[0])  # after the clients: decisions in flight at the swap used the old one
    runtime.service.trace.flush()
    record = last_records(serving_settings, 1)[0]
    assert record["decision_id"] == response.decision_id and record["model_version"] == published[-1]


def test_item_surfaces_refuse_requested_candidates_and_unknown_names(build):
    runtime = build()
    with pytest.raises(BadCandidates, match="takes its candidates from the item index"):
        runtime.service.decide(DecisionRequest(user_id=0, surface="items", candidates=["no_action"]))
    with pytest.raises(UnknownSurface, match=r"configured surfaces: \['cart', 'home', 'items', 'push'\]"):
        runtime.service.decide(DecisionRequest(user_id=0, surface="nowhere"))


@pytest.mark.parametrize("changes, message", [
    ({"caps": [{"name": "c", "window_s": 60, "limit": 1}]}, r"ranks items by inner product; remove \['caps'\]"),
    ({"model": {"name": "m", "alias": "champion"}}, r"remove \['model'\]"),
    ({"exploration": {"method": "thompson"}}, "no uncertainty model for thompson"),
])
def test_item_surface_files_with_action_rules_are_refused(tmp_path, changes, message):
    policy = write_policy_dir(tmp_path / "bad", surfaces={"items": item_surface(tmp_path, **changes)})
    with pytest.raises(PolicyConfigError, match=message):
        load_policy_config(policy)


def test_ann_settings_go_with_the_ann_items_source_only(tmp_path):
    body = {"name": "home", "feature_service": "uplift_v1", "candidates": {"ann": {"k": 5}}}
    with pytest.raises(PolicyConfigError, match="`ann` .* goes with `source: ann_items`"):
        load_policy_config(write_policy_dir(tmp_path / "a", surfaces={"home": body}))
    body = {"name": "home", "feature_service": "uplift_v1", "item_caps": [{"name": "x", "window_s": 1, "limit": 1}]}
    with pytest.raises(PolicyConfigError, match="item_caps apply to `candidates.source: ann_items` surfaces only"):
        load_policy_config(write_policy_dir(tmp_path / "b", surfaces={"home": body}))


def test_the_shipped_item_surface_loads_beside_the_promotion_surfaces():
    config = load_policy_config()
    assert sorted(config.item_surfaces) == ["recommended_items"] and "recommended_items" not in config.surfaces
    ann = config.item_surfaces["recommended_items"].candidates.ann
    assert ann.index_dir == "embeddings/items" and ann.k == 50


def test_the_watcher_thread_swaps_in_a_published_version_and_keeps_serving_one_that_fails_to_load(build, tmp_path):
    root = tmp_path / "watched"
    first = publish(root, seed=10)
    runtime = build(root=root)
    holder = runtime.service.items["items"].holder
    holder.interval_s = 0.01
    holder.start()
    second = publish(root, seed=11)
    for _ in range(5000):  # the thread polls every 10 ms; bounded wait, no timing asserted
        if holder.served.version == second:
            break
        time.sleep(0.002)
    assert holder.served.version == second != first
    holder.stop()
    (root / "CURRENT").write_text("20991231T000000000000Z-gone\n")  # a pointer to a version that is not there
    assert holder.refresh() is False and holder.served.version == second
    assert runtime.service.metrics.item_index_refresh_failures.labels("items")._value.get() == 1.0
    assert decide(runtime, WITH_VECTOR[0]).model.version == second


def test_the_region_rules_and_consent_apply_to_items(build, item_world, serving_settings):
    strict_blocks = {**REGIONS, "standard": {**REGIONS["standard"], "blocked_actions": [item_action(1003)]}}
    runtime = build(regions=strict_blocks, ann={"k": N_ITEMS}, slate_size=10)
    for user in NO_CONSENT[:5]:  # the bundles need marketing consent for every action: items too
        response = decide(runtime, user)
        assert [a.action_id for a in response.actions] == ["no_action"] and response.fallback is None
    served = {a.action_id for user in WITH_VECTOR[:10] for a in decide(runtime, user).actions}
    assert item_action(1003) not in served and len(served) > 10
    runtime.service.trace.flush()
    record = last_records(serving_settings, 1)[0]
    assert record["region"] in ("south", "west") and "user_profile_fv" in record["features"]
    assert "user_embedding_fv" in record["features"]
