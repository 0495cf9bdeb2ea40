"""Pseudonymous keys are stable per salt, differ across salts and users, and hide the raw values."""

from serving.identity import context_hash, user_key


def test_user_key_is_stable_per_salt_and_differs_across_users_and_salts():
    assert user_key(42, "s") == user_key(42, "s")
    assert len(user_key(42, "s")) == 32
    assert user_key(42, "s") != user_key(43, "s")
    assert user_key(42, "s") != user_key(42, "t")


def test_context_hash_ignores_key_order_but_not_values():
    assert context_hash({"a": 1, "b": "x"}, "s") == context_hash({"b": "x", "a": 1}, "s")
    assert context_hash({"a": 1}, "s") != context_hash({"a": 2}, "s")
    assert context_hash(None, "s") == context_hash({}, "s")
