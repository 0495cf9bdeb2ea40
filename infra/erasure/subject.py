"""The data subject of an erasure or export: one user id and every form the project stores it in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from serving.decision.identity import user_key

FEAST_PROJECT = b"hyperlift"  # feature_repo/feature_store.yaml `project`: the suffix of every online-store key
ENTITY_KEY_VERSION = 3  # feature_store.yaml `entity_key_serialization_version`
MAX_USER_ID = 2**63 - 1


@dataclass(frozen=True)
class Subject:
    """One user as the stores know them: the raw id (lake, tiles, seen and consent keys, Feast's entity key) and the
    keyed pseudonym `user_key` (decision log, outcomes, caps; the audit trail and the receipt name the user by it),
    with `former_keys`, the pseudonyms under retired trace salts (what was logged before a rotation)."""

    user_id: int
    user_key: str
    former_keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, user_id: int, salt: str, former_salts: tuple[str, ...] = ()) -> "Subject":
        """The subject of `user_id`: its pseudonym under the service's trace salt, and under each former salt."""
        if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 <= user_id <= MAX_USER_ID:
            raise ValueError(f"user_id must be an integer in 0..{MAX_USER_ID}, got {user_id!r}")
        former = tuple(dict.fromkeys(user_key(user_id, s) for s in former_salts if s != salt))
        return cls(user_id, user_key(user_id, salt), former)

    @property
    def user_keys(self) -> tuple[str, ...]:
        """Every pseudonym of the user, current first."""
        return (self.user_key, *self.former_keys)

    @property
    def entity_key(self) -> bytes:
        """The Redis key of the user's Feast online row (every feature view of the `user` entity shares it)."""
        key = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=self.user_id)])
        return serialize_entity_key(key, entity_key_serialization_version=ENTITY_KEY_VERSION) + FEAST_PROJECT

    @property
    def hash_tag(self) -> str:
        """`{<user_id>}`: the Redis Cluster hash tag of the keys named by raw id (tiles, seen events, consent)."""
        return f"{{{self.user_id}}}"

    def owns_id(self, value: Any) -> bool:
        """Whether a stored user id (an int, a numeric string as received, a float of a CSV) is this user's."""
        if value is None or isinstance(value, bool):
            return False
        if isinstance(value, int):
            return value == self.user_id
        if isinstance(value, float):
            return value.is_integer() and int(value) == self.user_id
        if isinstance(value, str):
            text = value.strip()
            return bool(re.fullmatch(r"[+]?\d+", text)) and int(text) == self.user_id
        return False

    def owns_record(self, record: Any) -> bool:
        """Whether a JSON record (a stream entry, a rejected line, a quarantined event) is about this user."""
        if not isinstance(record, dict):
            return False
        if record.get("user_key") in self.user_keys or self.owns_id(record.get("user_id")):
            return True
        event = record.get("event")
        if isinstance(event, str):
            try:
                event = json.loads(event)
            except ValueError:
                return False
        return isinstance(event, dict) and self.owns_id(event.get("user_id"))
