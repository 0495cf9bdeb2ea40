"""One round trip's commands split across a Redis Cluster's nodes, and their replies put back in order.

A decision's round trip reads keys of several slots at once: Feast's entity key (no hash tag: Feast's format), the
user's consent `{user_id}` and caps `{user_key}`, and one budget counter per campaign and day
(`{campaign:day}`, serving/policy/budgets.py). On one server they go in one write; on a cluster each command goes to
the master of its key's slot. `plan` groups the commands per node, keeping their order per node (Redis answers a
connection in order, and two commands of one key stay in the order they were queued); an MGET whose keys span
slots is split into one MGET per slot and its reply reassembled. A command's slot is the one of its keys (a script's
keys must share one: CROSSSLOT otherwise, refused here before anything is sent); keyless commands (PING) go to
the first node of the plan, or any master.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import redis

from infra.redis_cluster import slot

_MULTI_KEY = {"MGET", "DEL", "EXISTS", "UNLINK", "TOUCH"}  # every argument after the name is a key
_SCRIPTS = {"EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO"}  # name, body/sha, numkeys, keys...
_KEYLESS = {"PING", "INFO", "ECHO", "TIME", "SCRIPT", "CLUSTER", "ASKING", "READONLY", "DBSIZE"}


class CrossSlotCommand(redis.exceptions.RedisClusterException):
    """A script (or another multi-key command) whose keys are in different slots: it cannot run on a cluster."""


def _name(command: tuple) -> str:
    name = command[0]
    return (name.decode() if isinstance(name, bytes) else name).upper()


def command_slots(command: tuple) -> list[int]:
    """The slots of a command's keys, in key order (empty for a keyless command)."""
    name = _name(command)
    if name in _KEYLESS or len(command) < 2:
        return []
    if name in _MULTI_KEY:
        return [slot(key) for key in command[1:]]
    if name in _SCRIPTS:
        return [slot(key) for key in command[3:3 + int(command[2])]]
    return [slot(command[1])]


@dataclass
class NodeBatch:
    """The commands one node gets, and where each reply goes: (index in the round trip, key positions for the
    part of a split MGET, else None)."""

    node: Hashable
    commands: list[tuple] = field(default_factory=list)
    targets: list[tuple[int, list[int] | None]] = field(default_factory=list)


def plan(
    commands: Sequence[tuple], owner: Callable[[int], Hashable], keyless: Hashable | None = None
) -> list[NodeBatch]:
    """The commands grouped per node (`owner(slot)`), each node's in round-trip order. Keyless commands go to
    `keyless`, else to the first node of the plan (or the owner of slot 0 when no command has a key)."""
    batches: dict[Hashable, NodeBatch] = {}
    pending_keyless: list[tuple[int, tuple]] = []

    def batch(node: Hashable) -> NodeBatch:
        found = batches.get(node)
        if found is None:
            found = batches[node] = NodeBatch(node)
        return found

    for index, command in enumerate(commands):
        slots = command_slots(command)
        if not slots:
            pending_keyless.append((index, command))
            continue
        first = slots[0]
        if all(s == first for s in slots):
            target = batch(owner(first))
            target.commands.append(command)
            target.targets.append((index, None))
            continue
        if _name(command) != "MGET":
            raise CrossSlotCommand(
                f"{_name(command)} with keys in {len(set(slots))} slots cannot run on a Redis Cluster: its keys need "
                "one hash tag (docs/profiles.md: Redis Cluster)"
            )
        by_slot: dict[int, list[int]] = {}
        for position, key_slot in enumerate(slots):
            by_slot.setdefault(key_slot, []).append(position)
        for key_slot, positions in by_slot.items():
            target = batch(owner(key_slot))
            target.commands.append(("MGET", *(command[1 + p] for p in positions)))
            target.targets.append((index, positions))
    if pending_keyless:
        node = keyless if keyless is not None else (next(iter(batches)) if batches else owner(0))
        target = batch(node)
        for index, command in pending_keyless:
            target.commands.append(command)
            target.targets.append((index, None))
    return list(batches.values())


def merge(commands: Sequence[tuple], batches: Sequence[NodeBatch], replies: Sequence[Sequence]) -> list:
    """The replies of every node's batch, in the round trip's order (split MGETs reassembled; an error reply of any
    part stands for the whole MGET)."""
    out: list = [None] * len(commands)
    for batch, batch_replies in zip(batches, replies):
        for (index, positions), reply in zip(batch.targets, batch_replies):
            if positions is None:
                out[index] = reply
                continue
            if isinstance(out[index], Exception):
                continue
            if isinstance(reply, Exception):
                out[index] = reply
                continue
            if out[index] is None:
                out[index] = [None] * (len(commands[index]) - 1)
            for position, value in zip(positions, reply):
                out[index][position] = value
    return out


def redirection(reply: object) -> tuple[str, str, int] | None:
    """("MOVED" | "ASK", host, port) of a redirection error reply (redis-py's MovedError, AskError), else None."""
    if isinstance(reply, redis.exceptions.MovedError):
        return "MOVED", reply.host, reply.port
    if isinstance(reply, redis.exceptions.AskError):
        return "ASK", reply.host, reply.port
    return None


def unsettled(reply: object) -> bool:
    """A reply that says the cluster is between two states (a failover or a reshard): MOVED, ASK, TRYAGAIN,
    CLUSTERDOWN. The command did not run; after refreshing the slot map it can be sent again."""
    return isinstance(reply, (redis.exceptions.AskError, redis.exceptions.TryAgainError,
                              redis.exceptions.ClusterDownError))
