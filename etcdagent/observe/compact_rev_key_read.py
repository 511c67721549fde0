"""Reading kube-apiserver's compact_rev_key and the agent's record beside it, in one request.

Both keys are read in one transaction (same revision). What the gateway answers, measured
identical on etcd 3.4.23, 3.5.1, 3.5.30 and 3.6.14: a ``txn`` without ``compare`` runs its
``success`` ops and says ``"succeeded": true``; an absent key's range has no ``kvs``; a failed
compare omits ``succeeded`` and runs the ``failure`` ops.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import ValidationError

from etcdagent.errors import EtcdProtocolError
from etcdagent.etcd.client import MemberClient
from etcdagent.models import KeyValue
from etcdagent.observe.compact_rev_key import (
    AGENT_MOVE_KEY,
    COMPACT_REV_KEY,
    CompactRevKey,
    parse_value,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _range_kv(response: Any) -> KeyValue | None:
    kvs = ((response or {}).get("response_range") or {}).get("kvs") or []
    return KeyValue.model_validate(kvs[0]) if kvs else None


def _int(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def read_compact_rev_key(member: MemberClient) -> CompactRevKey:
    """Both keys in one read; raises EtcdError when the member does not answer."""
    body = {
        "success": [
            {"request_range": {"key": b64(COMPACT_REV_KEY)}},
            {"request_range": {"key": b64(AGENT_MOVE_KEY)}},
        ]
    }
    answer = member.call("compact_rev_key read", "/kv/txn", body)
    try:
        responses = answer.get("responses") or []
        key = _range_kv(responses[0]) if responses else None
        agent = _range_kv(responses[1]) if len(responses) > 1 else None
        revision = _int((answer.get("header") or {}).get("revision"))
    except (AttributeError, IndexError, ValidationError):
        raise EtcdProtocolError(
            f"{member.endpoint}: unexpected answer reading compact_rev_key: {answer!r:.200}",
            endpoint=member.endpoint,
            operation="compact_rev_key read",
        ) from None
    if key is None:
        return CompactRevKey(revision=revision)
    return CompactRevKey(
        revision=revision,
        version=key.version,
        value=parse_value(key.value),
        mod_revision=key.mod_revision,
        agent_revision=agent.mod_revision if agent is not None else 0,
    )
