"""Pseudonymous keys are stable per salt, differ across salts and users, and hide the raw values."""

from serving.decision.identity import context_hash, user_key


def test_user_key_is_stable_per_salt_and_differs_across_users_and_salts():
    assert user_key(42, "s") == user_key(42, "s")
    assert len(user_key(42, "s")) == 32
    assert user_key(42, "s") != user_key(43, "s")
    assert user_key(42, "s") != user_key(42, "t")


def test_context_hash_ignores_key_order_but_not_values():
    assert context_hash({"a": 1, "b": "x"}, "s") == context_hash({"b": "x", "a": 1}, "s")
    assert context_hash({"a": 1}, "s") != context_hash({"a": 2}, "s")
    assert context_hash(None, "s") == context_hash({}, "s")


def test_keys_are_hmac_sha256_and_never_change():
    # Cap counters, experiment arms and traces are keyed by these values: a change of the derivation would move every
    # user to new counters and, where assignment hashes the key, to other arms.
    assert user_key(42, "s") == "94568d5108ef7f10a4703672424461bc"  # HMAC-SHA256(b"s", b"42"), first 32 hex digits
    assert context_hash({"b": "x", "a": 1}, "s") == "28e566d2246b1db72054afdf62647115"  # of '{"a":1,"b":"x"}'
