"""Counting the keys under /registry/events/, /registry/leases/ and in all, on one member.

Three count-only ranges (``"count_only": true``): etcd answers ``count`` from its index without
reading or sending any value, so the cost is a walk of the in-memory key index, not of the
database. Measured answering ``{"header": {...}, "count": "N"}`` (``count`` omitted when 0, a
string like every int64, no ``kvs``) on etcd 3.4.23, 3.5.1, 3.5.30 and 3.6.14. The whole keyspace
is the range ``\\x00`` to ``\\x00`` (etcd's "from this key to the end").
"""

from __future__ import annotations

import base64
from typing import Any

from etcdagent.errors import EtcdProtocolError
from etcdagent.etcd.client import MemberClient
from etcdagent.observe.key_counts import EVENTS_PREFIX, LEASES_PREFIX, KeyCounts


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\x00"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _count(member: MemberClient, key: bytes, range_end: bytes) -> tuple[int, int]:
    body = {"key": _b64(key), "range_end": _b64(range_end), "count_only": True}
    answer: Any = member.call("count keys", "/kv/range", body)
    try:
        count = int(answer.get("count", 0))
        header = answer.get("header") or {}
        revision = int(header.get("revision", 0))
    except (AttributeError, TypeError, ValueError):
        raise EtcdProtocolError(
            f"{member.endpoint}: unexpected answer counting keys: {answer!r:.200}",
            endpoint=member.endpoint,
            operation="count keys",
        ) from None
    if count < 0:
        raise EtcdProtocolError(
            f"{member.endpoint}: negative key count {count}",
            endpoint=member.endpoint,
            operation="count keys",
        )
    return count, revision


def count_keys(member: MemberClient) -> KeyCounts:
    """The three counts through one member; raises EtcdError when it does not answer."""
    total, revision = _count(member, b"\x00", b"\x00")
    events, _ = _count(member, EVENTS_PREFIX, prefix_end(EVENTS_PREFIX))
    leases, _ = _count(member, LEASES_PREFIX, prefix_end(LEASES_PREFIX))
    return KeyCounts(total=total, events=events, leases=leases, revision=revision)
