"""Write rows of a Feast FeatureView into Feast's Redis online store, byte for byte in Feast's format, fast.

What Feast's `RedisOnlineStore.online_write_batch` stores, and so what this writer stores (Feast 0.67):
- one Redis hash per entity, keyed `serialize_entity_key(EntityKey, v3) + project` (the key every view of that
  entity shares);
- per feature a hash field `mmh3("<view>:<feature>")` (4 bytes) holding the serialized `feast.types.Value`
  proto (an empty string for a null), where `<view>` is `_versioned_fv_name(view, config)`;
- a field `_ts:<view>` holding the serialized `google.protobuf.Timestamp` of the row's event time, taken from a
  Python `datetime` (so truncated to microseconds, as Feast's `Timestamp.FromDatetime` does);
- `EXPIRE key key_ttl_seconds` after the HSET when the online store config sets `key_ttl_seconds`.

Feast builds one protobuf object per value and one redis-py command per row. This writer builds the wire bytes
of a whole chunk of rows with numpy instead: fixed-width values (Float32, Float64, Bool) are a column of bytes
behind their proto tag, Int32/Int64 are varints computed per column, and the RESP commands themselves (HSET, or
EVALSHA with their arguments) are laid out as a matrix and flattened in one pass. Chunks go to Redis over one
dedicated connection, and the next chunk is built while Redis applies the previous one (two cores: we build,
Redis writes). Types without a vectorised encoder (strings, lists, ...) go through Feast's own
`python_values_to_proto_values`, value by value, so every type Feast accepts is still written as Feast writes it.

Modes:
- ``bulk``: every row is written, like Feast's `skip_dedup` fast path (the full-materialization case). When a
  frame holds several rows of one entity, the last one in frame order wins.
- ``newer_or_equal``: per entity, a row is written only if its event time is >= the stored `_ts:<view>`
  (seconds and nanos compared), checked and written atomically by a Lua script (one call per 64 rows, each call
  atomic as a whole). Rows of one entity are applied in frame order. This differs from Feast's default write path
  on purpose. Feast 0.67 reads all stored timestamps in one round trip, then writes in a second one (not atomic
  against a concurrent writer), and skips a row whose event time is <= the stored one (seconds and nanos): an
  *equal* timestamp is refused. The streaming updater writes corrections whose event time equals the stored one,
  so here an equal timestamp is accepted.

A write is not a transaction: when Redis refuses a command (`OnlineWriteError`, with Redis's message), the rows
before it may be written. Writing the same frame again is idempotent.

On a Redis Cluster (`redis_type: redis_cluster`, REDIS_URL=redis+cluster://...) each chunk is split by the slot
of every row's key (Feast's keys carry no hash tag: CRC16 of the whole key) and sent to each master over a
connection of its own, all masters at once; a row's commands keep their frame order (rows of one entity share a
key, so a slot, so a node). In `newer_or_equal` mode a script call takes rows of one slot only (Redis refuses a
script whose keys span slots), up to ROWS_PER_SCRIPT_CALL of them. A failover or reshard during a write answers
MOVED / CLUSTERDOWN (`OnlineWriteError`, which says so); writing the frame again is idempotent.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import redis
from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from redis.cluster import RedisCluster
from redis.crc import key_slot

Mode = Literal["bulk", "newer_or_equal"]
EVENT_TIMESTAMP = "event_timestamp"
DEFAULT_CHUNK_ROWS = 20_000
ROWS_PER_SCRIPT_CALL = 64  # newer_or_equal: rows per EVALSHA (amortises the call; Redis blocks ~1 ms per call)

# Keeps a row when its event time is >= the stored one. Timestamps are the serialized protos themselves (field 1
# seconds, field 2 nanos, both varints), decoded here so the stored value stays exactly Feast's.
NEWER_OR_EQUAL_LUA = """
local function varint(s, i)
  local groups = {}
  local b
  repeat
    b = string.byte(s, i)
    i = i + 1
    groups[#groups + 1] = b % 128
  until b < 128
  local v = 0
  if #groups == 10 then
    -- a negative int64 (before 1970): two's complement over 64 bits; the complement is small, so exact
    for k = 9, 1, -1 do v = v * 128 + (127 - groups[k]) end
    return -(v + 1), i
  end
  for k = #groups, 1, -1 do v = v * 128 + groups[k] end
  return v, i
end
local function timestamp(s)
  local seconds, nanos, i = 0, 0, 1
  while i <= #s do
    local tag = string.byte(s, i)
    local v
    v, i = varint(s, i + 1)
    if tag == 8 then seconds = v elseif tag == 16 then nanos = v end
  end
  return seconds, nanos
end
-- KEYS: one entity key per row. ARGV: ts field, key TTL (0: none), F, the F hash fields, then per row its
-- timestamp and its F values. Rows are applied in order, so two rows of one entity behave as two calls would.
local ts_field, ttl, nf = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local args = {ts_field, false}
for k = 1, nf do args[2 * k + 1] = ARGV[3 + k] end
local written = 0
for i = 1, #KEYS do
  local at = 3 + nf + (i - 1) * (1 + nf) + 1
  local keep = true
  local stored = redis.call('HGET', KEYS[i], ts_field)
  if stored then
    local old_s, old_n = timestamp(stored)
    local new_s, new_n = timestamp(ARGV[at])
    keep = not (new_s < old_s or (new_s == old_s and new_n < old_n))
  end
  if keep then
    args[2] = ARGV[at]
    for k = 1, nf do args[2 * k + 2] = ARGV[at + k] end
    redis.call('HSET', KEYS[i], unpack(args))
    if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
    written = written + 1
  end
end
return written
"""


class OnlineWriteError(RuntimeError):
    """Redis refused part of a write (the message carries Redis's first error reply)."""


# ---------------------------------------------------------------------------------------------------------------
# Byte segments: one (rows × width) uint8 matrix per piece of a command, with per-row lengths when ragged.


@dataclass(frozen=True)
class _Segment:
    data: np.ndarray  # (n, width) uint8
    lengths: np.ndarray | None = None  # (n,) valid bytes per row, None when every row uses the whole width


_Piece = bytes | _Segment  # bytes: the same for every row


def _ragged_from_bytes(values: list[bytes]) -> _Segment:
    """A ragged segment from Python byte strings (the fallback for values without a vectorised encoder)."""
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    width = int(lengths.max()) if len(values) else 0
    data = np.zeros((len(values), width), dtype=np.uint8)
    if width:
        data[np.arange(width) < lengths[:, None]] = np.frombuffer(b"".join(values), dtype=np.uint8)
    return _Segment(data, lengths)


def _decimal(numbers: np.ndarray) -> _Segment:
    """ASCII decimal of non-negative integers, as a ragged segment."""
    numbers = numbers.astype(np.int64)
    width = len(str(int(numbers.max()))) if len(numbers) else 1
    count = 1 + np.sum(numbers[:, None] >= 10 ** np.arange(1, width, dtype=np.int64), axis=1)
    exponent = np.maximum(count[:, None] - 1 - np.arange(width)[None, :], 0)
    digits = (numbers[:, None] // 10**exponent) % 10
    return _Segment((digits + 48).astype(np.uint8), count)


def _framed(value: _Segment) -> _Segment:
    r"""`$<len>\r\n<value>\r\n` of values of at most 99 bytes, built in one matrix (the common, numeric case)."""
    n, width = value.data.shape
    lengths = value.lengths
    two = lengths >= 10
    out = np.zeros((n, 5 + width + 2), dtype=np.uint8)
    out[:, 0] = ord("$")
    out[:, 1] = np.where(two, 48 + lengths // 10, 48 + lengths)
    out[:, 2] = np.where(two, 48 + lengths % 10, 13)
    out[:, 3] = np.where(two, 13, 10)
    out[:, 4] = np.where(two, 10, 0)
    if two.any():
        out[two, 5:5 + width] = value.data[two]
        out[~two, 4:4 + width] = value.data[~two]
    else:
        out[:, 4:4 + width] = value.data
    end = 4 + two + lengths
    rows = np.arange(n)
    out[rows, end] = 13
    out[rows, end + 1] = 10
    return _Segment(out, end + 2)


def _bulk_string(value: _Piece) -> list[_Piece]:
    r"""RESP bulk string `$<len>\r\n<bytes>\r\n` around each row's value."""
    if isinstance(value, bytes):
        return [b"$%d\r\n%s\r\n" % (len(value), value)]
    n, width = value.data.shape
    if value.lengths is not None and n and (value.lengths == value.lengths[0]).all():
        value = _Segment(value.data[:, : int(value.lengths[0])])  # every row has the same length: a fixed segment
    if value.lengths is None:
        return [b"$%d\r\n" % value.data.shape[1], value, b"\r\n"]
    if width <= 99:
        return [_framed(value)]
    return [b"$", _decimal(value.lengths), b"\r\n", value, b"\r\n"]


def _assemble(pieces: list[_Piece], n: int) -> bytes:
    """Concatenate, row by row, the valid bytes of every piece."""
    merged: list[_Piece] = []
    for piece in pieces:
        if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += piece
        else:
            merged.append(piece)
    arrays = [
        np.broadcast_to(np.frombuffer(p, dtype=np.uint8), (n, len(p))) if isinstance(p, bytes) else p.data
        for p in merged
    ]
    data = np.hstack(arrays)
    ragged = [(i, p) for i, p in enumerate(merged) if isinstance(p, _Segment) and p.lengths is not None]
    if not ragged:
        return data.tobytes()
    mask = np.ones(data.shape, dtype=bool)
    starts = np.cumsum([0, *(a.shape[1] for a in arrays)])
    for i, piece in ragged:
        mask[:, starts[i]:starts[i + 1]] = np.arange(piece.data.shape[1]) < piece.lengths[:, None]
    return data[mask].tobytes()


def _row_offsets(pieces: list[_Piece], n: int) -> np.ndarray:
    """Start of each row's bytes in `_assemble(pieces, n)`, plus the end: n + 1 offsets."""
    lengths = np.zeros(n, dtype=np.int64)
    for piece in pieces:
        if isinstance(piece, bytes):
            lengths += len(piece)
        else:
            lengths += piece.data.shape[1] if piece.lengths is None else piece.lengths
    return np.concatenate([[0], np.cumsum(lengths)])


# ---------------------------------------------------------------------------------------------------------------
# Protobuf wire format per column.

_VARINT_SHIFTS = (7 * np.arange(10)).astype(np.uint64)
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def _varint(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values (negatives as 10-byte two's complement): (n × 10 bytes, lengths)."""
    u = values.astype(np.int64).view(np.uint64)
    groups = ((u[:, None] >> _VARINT_SHIFTS) & np.uint64(0x7F)).astype(np.uint8)
    lengths = 1 + np.sum(u[:, None] >= _VARINT_LIMITS, axis=1)
    groups |= (np.arange(10)[None, :] < (lengths - 1)[:, None]).astype(np.uint8) << 7
    return groups, lengths


def _tagged_fixed(tag: int, raw: np.ndarray, nulls: np.ndarray) -> _Segment:
    n = raw.shape[0]
    data = np.empty((n, 1 + raw.shape[1]), dtype=np.uint8)
    data[:, 0] = tag
    data[:, 1:] = raw
    return _Segment(data, np.where(nulls, 0, data.shape[1]) if nulls.any() else None)


def _tagged_varint(tag: int, values: np.ndarray, nulls: np.ndarray) -> _Segment:
    groups, lengths = _varint(values)
    data = np.empty((len(values), 11), dtype=np.uint8)
    data[:, 0] = tag
    data[:, 1:] = groups
    return _Segment(data, np.where(nulls, 0, lengths + 1))


# Value.proto: int32_val = 3, int64_val = 4, double_val = 5, float_val = 6, bool_val = 7; tag = field << 3 | wire.
_TAG_INT32, _TAG_INT64, _TAG_DOUBLE, _TAG_FLOAT, _TAG_BOOL = 0x18, 0x20, 0x29, 0x35, 0x38


def _value_segment(column: pd.Series, value_type: ValueType) -> _Segment:
    """Serialized `feast.types.Value` of every row of `column`, as Feast's type map would produce it."""
    nulls = column.isna().to_numpy()
    if value_type == ValueType.FLOAT:
        raw = column.to_numpy(dtype=np.float32, na_value=0.0).astype("<f4", copy=False)
        return _tagged_fixed(_TAG_FLOAT, raw.view(np.uint8).reshape(-1, 4), nulls)
    if value_type == ValueType.DOUBLE:
        raw = column.to_numpy(dtype=np.float64, na_value=0.0).astype("<f8", copy=False)
        return _tagged_fixed(_TAG_DOUBLE, raw.view(np.uint8).reshape(-1, 8), nulls)
    if value_type == ValueType.BOOL and column.dtype.kind == "b":
        raw = column.to_numpy(dtype=np.uint8, na_value=0).reshape(-1, 1)
        return _tagged_fixed(_TAG_BOOL, raw, nulls)
    if value_type in (ValueType.INT64, ValueType.INT32) and column.dtype.kind in "iuf":
        values = column.to_numpy(dtype=np.float64 if column.dtype.kind == "f" else np.int64, na_value=0)
        values = np.trunc(values).astype(np.int64) if values.dtype.kind == "f" else values
        if value_type == ValueType.INT32:
            values = values.astype(np.int32).astype(np.int64)  # int32 varints are sign-extended to 64 bits
        return _tagged_varint(_TAG_INT32 if value_type == ValueType.INT32 else _TAG_INT64, values, nulls)
    # Anything else: Feast's own conversion, one value at a time.
    protos = python_values_to_proto_values(column.to_numpy(dtype=object), value_type)
    return _ragged_from_bytes([p.SerializeToString() for p in protos])


def _timestamp_segment(nanos_since_epoch: np.ndarray) -> _Segment:
    """Serialized `google.protobuf.Timestamp` of each event time, truncated to microseconds like a `datetime`."""
    micros = np.floor_divide(nanos_since_epoch, 1_000)
    seconds = np.floor_divide(micros, 1_000_000)
    nanos = (micros - seconds * 1_000_000) * 1_000
    # proto3 omits a zero field: seconds (tag 0x08) and nanos (tag 0x10) are each present only when non-zero
    seconds_part = _tagged_varint(0x08, seconds, seconds == 0)
    nanos_part = _tagged_varint(0x10, nanos, nanos == 0)
    return _assemble_ragged([seconds_part, nanos_part])


def _assemble_ragged(segments: list[_Segment]) -> _Segment:
    """Concatenate segments row by row into one left-aligned ragged segment."""
    lengths = sum(s.data.shape[1] if s.lengths is None else s.lengths for s in segments)
    lengths = np.broadcast_to(np.asarray(lengths, dtype=np.int64), (segments[0].data.shape[0],))
    width = int(lengths.max()) if len(lengths) else 0
    out = np.zeros((len(lengths), width), dtype=np.uint8)
    if width:
        flat = _assemble(segments, len(lengths))
        out[np.arange(width) < lengths[:, None]] = np.frombuffer(flat, dtype=np.uint8)
    return _Segment(out, lengths)


# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """What the writer needs to know of one feature view, computed once."""

    name: str  # the versioned view name Feast keys the online store with
    join_keys: dict[str, ValueType]
    features: list[tuple[str, ValueType, bytes]]  # name, value type, hash field (mmh3 of "<view>:<feature>")
    ts_field: bytes


class OnlineWriter:
    """Writes rows of feature views into the Redis online store of `store`, in Feast's exact format."""

    def __init__(self, store: FeatureStore, client: redis.Redis | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        online = store._get_provider().online_store
        config = store.config.online_store
        if not isinstance(online, RedisOnlineStore) or not isinstance(config, RedisOnlineStoreConfig):
            raise TypeError(f"OnlineWriter writes Feast's Redis online store; this repo uses {type(online).__name__}")
        self.store = store
        self.client = client or online._get_client(config)
        if (config.redis_type == RedisType.redis_cluster) != isinstance(self.client, RedisCluster):
            raise TypeError(
                f"the online store is redis_type={config.redis_type.value} but the client is a "
                f"{type(self.client).__name__}: build both from the same REDIS_URL (infra/redis_cluster.py)"
            )
        self.chunk_rows = chunk_rows
        self.key_ttl_seconds = int(config.key_ttl_seconds or 0)
        self._project = store.config.project.encode("utf-8")
        self._key_version = store.config.entity_key_serialization_version
        self._layouts: dict[str, _Layout] = {}
        self._script_sha: str | None = None

    def layout(self, view: FeatureView) -> _Layout:
        """Names, types and hash fields of `view` as Feast's Redis store keys them."""
        name = _versioned_fv_name(view, self.store.config)
        cached = self._layouts.get(name)
        if cached is None:
            join_keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
            features = [(f.name, f.dtype.to_value_type(), _mmh3(f"{name}:{f.name}")) for f in view.features]
            cached = self._layouts[name] = _Layout(name, join_keys, features, f"_ts:{name}".encode())
        return cached

    def write(self, view: FeatureView | str, frame: pd.DataFrame, mode: Mode = "bulk") -> int:
        """Write `frame` (join keys, tz-aware `event_timestamp`, the view's features) and return the rows written.

        In `newer_or_equal` mode rows older than the entity's stored event time are skipped and not counted.
        """
        if mode not in ("bulk", "newer_or_equal"):
            raise ValueError(f"mode must be 'bulk' or 'newer_or_equal', got {mode!r}")
        if isinstance(view, str):
            view = self.store.get_feature_view(view)
        layout = self.layout(view)
        self._check_columns(layout, frame)
        if frame.empty:
            return 0
        timestamps = frame[EVENT_TIMESTAMP]
        if not isinstance(timestamps.dtype, pd.DatetimeTZDtype):
            raise ValueError(
                f"{EVENT_TIMESTAMP} must be a tz-aware datetime column (got {timestamps.dtype}); "
                "convert with pd.to_datetime(..., utc=True)"
            )
        if timestamps.isna().any():
            raise ValueError(f"{EVENT_TIMESTAMP} has {int(timestamps.isna().sum())} null values; every row needs one")
        if mode == "newer_or_equal":
            self._script_sha = self._load_script()
        if isinstance(self.client, RedisCluster):
            return self._write_cluster(layout, frame, mode)
        written = 0
        connection = self._connect()
        try:
            pending: tuple[int, int] | None = None  # (rows, replies) of the chunk Redis is applying
            for start in range(0, len(frame), self.chunk_rows):
                payload, replies = self._encode(layout, frame.iloc[start:start + self.chunk_rows], mode)
                # Build chunk k+1 while Redis applies chunk k, then collect k's replies before sending k+1.
                if pending is not None:
                    written += self._rows_written(connection, *pending, mode)
                connection.sendall(payload)
                pending = (min(self.chunk_rows, len(frame) - start), replies)
            if pending is not None:
                written += self._rows_written(connection, *pending, mode)
        finally:
            connection.close()
        return written

    @staticmethod
    def _check_columns(layout: _Layout, frame: pd.DataFrame) -> None:
        needed = [*layout.join_keys, EVENT_TIMESTAMP, *(name for name, _, _ in layout.features)]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"frame for {layout.name} lacks columns {missing}; it needs {needed}")

    # -- encoding ----------------------------------------------------------------------------------------------

    def _key_segment(self, layout: _Layout, frame: pd.DataFrame) -> _Segment:
        """Feast's Redis key of each row: serialize_entity_key(..., v3) + project."""
        n = len(frame)
        if len(layout.join_keys) == 1 and self._key_version >= 3:
            (join_key, value_type), = layout.join_keys.items()
            column = frame[join_key]
            if value_type in (ValueType.INT64, ValueType.INT32) and column.dtype.kind in "iu" and not column.isna().any():
                encoded = join_key.encode("utf8")
                width, fmt = (8, "<i8") if value_type == ValueType.INT64 else (4, "<i4")
                prefix = (
                    np.array([1, ValueType.STRING.value, len(encoded)], dtype="<u4").tobytes() + encoded
                    + np.array([value_type.value, width], dtype="<u4").tobytes()
                )
                values = column.to_numpy().astype(fmt).view(np.uint8).reshape(n, width)
                data = np.empty((n, len(prefix) + width + len(self._project)), dtype=np.uint8)
                data[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
                data[:, len(prefix): len(prefix) + width] = values
                data[:, len(prefix) + width:] = np.frombuffer(self._project, dtype=np.uint8)
                return _Segment(data)
        # Other keys (strings, several join keys): Feast's own entity key serialization, row by row.
        protos = {k: python_values_to_proto_values(frame[k].to_numpy(dtype=object), t) for k, t in layout.join_keys.items()}
        keys = [
            serialize_entity_key(
                EntityKeyProto(join_keys=list(layout.join_keys), entity_values=[protos[k][i] for k in layout.join_keys]),
                entity_key_serialization_version=self._key_version,
            ) + self._project
            for i in range(n)
        ]
        return _ragged_from_bytes(keys)

    def _load_script(self) -> str:
        """Load the newer_or_equal script (on every master of a cluster: each runs its own slots' calls)."""
        if isinstance(self.client, RedisCluster):
            shas = {node.redis_connection.script_load(NEWER_OR_EQUAL_LUA) for node in self.client.get_primaries()}
            return shas.pop()
        return self.client.script_load(NEWER_OR_EQUAL_LUA)

    def _write_cluster(self, layout: _Layout, frame: pd.DataFrame, mode: Mode) -> int:
        """`write` on a Redis Cluster: each chunk split per master by the slot of each row's key, sent to every
        master at once, the next chunk built while they apply it."""
        names, owner_of_slot = _slot_owners(self.client)
        sockets: dict[int, socket.socket] = {}
        written = 0
        try:
            pending: list[tuple[socket.socket, int, int]] = []
            for start in range(0, len(frame), self.chunk_rows):
                chunk = frame.iloc[start:start + self.chunk_rows]
                slots = self._slots(layout, chunk)
                order = np.argsort(slots, kind="stable")  # rows of one slot together, in frame order
                owner = owner_of_slot[slots[order]]
                sends = []
                for node in np.unique(owner).tolist():
                    rows = order[owner == node]
                    calls = _script_calls(slots[rows]) if mode == "newer_or_equal" else None
                    payload, replies = self._encode(layout, chunk.iloc[rows], mode, calls)
                    if node not in sockets:
                        sockets[node] = self._connect(self.client.nodes_manager.get_node(node_name=names[node])
                                                      .redis_connection)
                    sends.append((sockets[node], payload, len(rows), replies))
                for sock, rows_, replies in pending:
                    written += self._rows_written(sock, rows_, replies, mode)
                for sock, payload, _, _ in sends:
                    sock.sendall(payload)
                pending = [(sock, n, replies) for sock, _, n, replies in sends]
            for sock, rows_, replies in pending:
                written += self._rows_written(sock, rows_, replies, mode)
        finally:
            for sock in sockets.values():
                sock.close()
        return written

    def _slots(self, layout: _Layout, frame: pd.DataFrame) -> np.ndarray:
        """The cluster slot of each row's key as Redis computes it: CRC16 of the whole key (Feast's keys carry no
        hash tag), over the byte columns at once; a key that happens to hold a `{...}` (bytes of the id) goes
        through redis-py's key_slot, which honours the tag."""
        segment = self._key_segment(layout, frame)
        data = segment.data
        if segment.lengths is not None:  # ragged keys (string join keys): one at a time
            return np.fromiter((key_slot(data[i, :length].tobytes()) for i, length in enumerate(segment.lengths)),
                               dtype=np.int64, count=len(frame))
        crc = np.zeros(len(frame), dtype=np.uint16)
        for column in range(data.shape[1]):
            crc = (crc << np.uint16(8)) ^ _CRC16_TABLE[(crc >> np.uint16(8)) ^ data[:, column]]
        slots = (crc & np.uint16(SLOTS - 1)).astype(np.int64)
        tagged = np.flatnonzero((data == ord("{")).any(axis=1))
        for i in tagged.tolist():
            slots[i] = key_slot(data[i].tobytes())
        return slots

    def _encode(
        self, layout: _Layout, frame: pd.DataFrame, mode: Mode, calls: list[tuple[int, int]] | None = None
    ) -> tuple[bytes, int]:
        """RESP bytes of the chunk's commands and how many replies they get: HSET (+ EXPIRE) per row in bulk mode,
        one EVALSHA of the newer_or_equal script per ROWS_PER_SCRIPT_CALL rows otherwise (or per `calls`, the
        [first, last) rows of each call: one slot's rows on a cluster)."""
        n = len(frame)
        key = _bulk_string(self._key_segment(layout, frame))
        nanos = frame[EVENT_TIMESTAMP].dt.as_unit("ns").array.asi8  # UTC nanoseconds, whatever the zone
        ts_value = _bulk_string(_timestamp_segment(nanos))
        ts_field = _bulk_string(layout.ts_field)
        ttl = b"%d" % self.key_ttl_seconds
        if mode == "bulk":
            pairs: list[_Piece] = []
            for name, value_type, field in layout.features:
                pairs += [*_bulk_string(field), *_bulk_string(_value_segment(frame[name], value_type))]
            n_args = 2 + 2 * len(layout.features)  # the ts field/value pair + one pair per feature
            pieces = [b"*%d\r\n$4\r\nHSET\r\n" % (2 + n_args), *key, *ts_field, *ts_value, *pairs]
            if self.key_ttl_seconds:
                pieces += [b"*3\r\n$6\r\nEXPIRE\r\n", *key, *_bulk_string(ttl)]
            return _assemble(pieces, n), n * (2 if self.key_ttl_seconds else 1)
        # newer_or_equal: one EVALSHA per ROWS_PER_SCRIPT_CALL rows; hash fields once per call, not once per row
        values: list[_Piece] = [*ts_value]
        for name, value_type, _ in layout.features:
            values += _bulk_string(_value_segment(frame[name], value_type))
        keys, key_at = _assemble(key, n), _row_offsets(key, n)
        rows, row_at = _assemble(values, n), _row_offsets(values, n)
        fields = [field for _, _, field in layout.features]
        shared = b"".join(b"".join(_bulk_string(v)) for v in (layout.ts_field, ttl, b"%d" % len(fields), *fields))
        out: list[bytes] = []
        if calls is None:
            calls = [(first, min(first + ROWS_PER_SCRIPT_CALL, n)) for first in range(0, n, ROWS_PER_SCRIPT_CALL)]
        for first, last in calls:
            count = last - first
            n_args = 3 + count + 3 + len(fields) + count * (1 + len(fields))
            out += [
                b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (n_args, self._script_sha.encode()),
                b"".join(_bulk_string(b"%d" % count)), keys[key_at[first]:key_at[last]], shared,
                rows[row_at[first]:row_at[last]],
            ]
        return b"".join(out), len(calls)

    # -- transport ---------------------------------------------------------------------------------------------

    def _connect(self, client: redis.Redis | None = None) -> socket.socket:
        """A dedicated, authenticated connection of the client's (or one cluster node's) pool settings; raw commands
        never share one."""
        pool = (client or self.client).connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        connection.connect()  # AUTH and SELECT run here, through redis-py
        sock = connection._sock
        connection._sock = None  # the socket is ours now; redis-py must not reuse or close it
        return sock

    @staticmethod
    def _rows_written(sock: socket.socket, rows: int, expected: int, mode: Mode) -> int:
        """Read a chunk's `expected` replies; return its rows written. Every reply here is one CRLF-ended line."""
        chunks: list[bytes] = []
        lines = 0
        while lines < expected:
            data = sock.recv(1 << 20)
            if not data:
                raise OnlineWriteError("Redis closed the connection in the middle of a write")
            chunks.append(data)
            lines += data.count(b"\r\n")
        replies = b"".join(chunks)
        if replies.startswith(b"-") or b"\r\n-" in replies:
            start = 0 if replies.startswith(b"-") else replies.index(b"\r\n-") + 2
            message = replies[start:replies.index(b"\r\n", start)].decode(errors="replace")
            if message.startswith(("-MOVED", "-ASK", "-CLUSTERDOWN", "-TRYAGAIN")):
                raise OnlineWriteError(f"Redis refused a write: {message} (the cluster's slots moved: a failover or "
                                       "a reshard; write the frame again, a write is idempotent)")
            raise OnlineWriteError(f"Redis refused a write: {message}")
        if mode == "bulk":
            return rows
        return sum(int(line[1:]) for line in replies.split(b"\r\n")[:expected])


def _crc16_table() -> np.ndarray:
    """CRC16-CCITT (XMODEM, polynomial 0x1021), the checksum of Redis Cluster's key slots, one entry per byte."""
    table = np.zeros(256, dtype=np.uint16)
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table[byte] = crc & 0xFFFF
    return table


_CRC16_TABLE = _crc16_table()
SLOTS = 16384


def _slot_owners(client: RedisCluster) -> tuple[list[str], np.ndarray]:
    """(node names, each slot's master as an index into them), from the client's slot map."""
    names: list[str] = []
    index: dict[str, int] = {}
    owners = np.empty(SLOTS, dtype=np.int64)
    for slot_number in range(SLOTS):
        name = client.nodes_manager.slots_cache[slot_number][0].name
        owners[slot_number] = index.setdefault(name, len(names))
        if owners[slot_number] == len(names):
            names.append(name)
    return names, owners


def _script_calls(slots: np.ndarray) -> list[tuple[int, int]]:
    """[first, last) rows of each newer_or_equal call over rows sorted by slot: one slot per call (a script's keys
    must share one), at most ROWS_PER_SCRIPT_CALL rows."""
    calls: list[tuple[int, int]] = []
    starts = np.flatnonzero(np.diff(slots, prepend=-1)) if len(slots) else np.array([], dtype=np.int64)
    for first, end in zip(starts.tolist(), [*starts[1:].tolist(), len(slots)]):
        calls += [(f, min(f + ROWS_PER_SCRIPT_CALL, end)) for f in range(first, end, ROWS_PER_SCRIPT_CALL)]
    return calls
