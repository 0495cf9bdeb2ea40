"""The data subject of an erasure or export: one user id and every form the project stores it in.

The raw id is what the raw layer holds (landing, `raw/`, `quarantine/`, the quarantine stream, service logs); the
lake below it and Redis hold the user's pseudonym (feature_repo/pseudonyms.py) under the pseudonym key's current
version, and under retired ones until a re-key moved them (infra/rekey.py). A store is searched for all of them:
`ids`. A pseudonym is a 53-bit keyed hash, so it equals another user's raw id with probability (ids in use)/2^53
per key version (about 10^-9 for 10 million users): erasing one user never realistically touches another's rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from infra.keys import Pseudonymizer
from serving.decision.identity import user_key

FEAST_PROJECT = b"hyperlift"  # feature_repo/feature_store.yaml `project`: the suffix of every online-store key
ENTITY_KEY_VERSION = 3  # feature_store.yaml `entity_key_serialization_version`
MAX_USER_ID = 2**63 - 1


@dataclass(frozen=True)
class Subject:
    """One user as the stores know them: the raw id (the raw layer), `lake_ids`, the user's pseudonyms under every
    stored version of the pseudonym key (the lake below the raw layer; tiles, seen and consent keys and Feast's
    entity key in Redis), and the keyed hash `user_key` (decision log, outcomes, caps; the audit trail and the
    receipt name the user by it), with `former_keys`, the hashes under retired trace salts (what was logged before a
    rotation)."""

    user_id: int
    user_key: str
    former_keys: tuple[str, ...] = ()
    lake_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, user_id: int, salt: str, former_salts: tuple[str, ...] = (),
           pseudonymizers: tuple[Pseudonymizer, ...] = ()) -> "Subject":
        """The subject of `user_id`: its hash under the service's trace salt and each former salt, its pseudonym
        under each version of the pseudonym key."""
        if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 <= user_id <= MAX_USER_ID:
            raise ValueError(f"user_id must be an integer in 0..{MAX_USER_ID}, got {user_id!r}")
        former = tuple(dict.fromkeys(user_key(user_id, s) for s in former_salts if s != salt))
        lake_ids = tuple(dict.fromkeys(p(user_id) for p in pseudonymizers))
        return cls(user_id, user_key(user_id, salt), former, lake_ids)

    @property
    def ids(self) -> tuple[int, ...]:
        """Every integer id the stores may hold for the user: the raw id, then the pseudonyms."""
        return tuple(dict.fromkeys((self.user_id, *self.lake_ids)))

    @property
    def user_keys(self) -> tuple[str, ...]:
        """Every pseudonym of the user, current first."""
        return (self.user_key, *self.former_keys)

    @property
    def entity_keys(self) -> tuple[bytes, ...]:
        """The Redis keys of the user's Feast online row (every feature view of the `user` entity shares one), by
        pseudonym (and by raw id: a store written before the lake was pseudonymous)."""
        return tuple(entity_key(i) for i in self.ids)

    @property
    def hash_tags(self) -> tuple[str, ...]:
        """`{<id>}` per id: the Redis Cluster hash tags of the keys named by the user's id (tiles, seen events,
        consent)."""
        return tuple(f"{{{i}}}" for i in self.ids)

    def owns_id(self, value: Any) -> bool:
        """Whether a stored user id (an int, a numeric string as received, a float of a CSV) is this user's: the raw
        id or one of its pseudonyms."""
        if value is None or isinstance(value, bool):
            return False
        if isinstance(value, int):
            return value in self.ids
        if isinstance(value, float):
            return value.is_integer() and int(value) in self.ids
        if isinstance(value, str):
            text = value.strip()
            return bool(re.fullmatch(r"[+]?\d+", text)) and int(text) in self.ids
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


def entity_key(user_id: int) -> bytes:
    """The Redis key of one id's Feast online row (`user` entity, this project)."""
    key = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=int(user_id))])
    return serialize_entity_key(key, entity_key_serialization_version=ENTITY_KEY_VERSION) + FEAST_PROJECT
