"""The agent's move of kube-apiserver's ``compact_rev_key``, before a compaction of its own.

The same transaction an apiserver runs (``observe.compact_rev_key``): if the key's version is
still the one the plan saw, put the revision about to be compacted to as its value, and in the
same transaction record the move under ``AGENT_MOVE_KEY`` (so a later read tells the agent's moves
from an apiserver's). An apiserver that comes back then loses one attempt, learns the new version
and value (1.34+ trims its watch cache from the value: the revision really compacted to), and
compacts one interval later. A lost transaction means someone else just moved the key, that is
compacted: the agent does not compact then.
"""

from __future__ import annotations

from etcdagent.etcd.client import MemberClient
from etcdagent.observe.compact_rev_key import AGENT_MOVE_KEY, COMPACT_REV_KEY
from etcdagent.observe.compact_rev_key_read import b64


def move_compact_rev_key(member: MemberClient, version: int, revision: int) -> tuple[bool, int]:
    """(whether the key was moved from ``version``, the key's version now)."""
    value = b64(str(revision).encode())
    body = {
        "compare": [
            {
                "key": b64(COMPACT_REV_KEY),
                "target": "VERSION",
                "result": "EQUAL",
                "version": str(version),
            }
        ],
        "success": [
            {"request_put": {"key": b64(COMPACT_REV_KEY), "value": value}},
            {"request_put": {"key": b64(AGENT_MOVE_KEY), "value": value}},
        ],
        "failure": [{"request_range": {"key": b64(COMPACT_REV_KEY)}}],
    }
    # Not retried: a transaction that timed out may have been applied (then the key moved, no
    # compaction followed, and the key's next judgement sees it moved by the agent: harmless).
    answer = member.call("compact_rev_key move", "/kv/txn", body, retry=False)
    if answer.get("succeeded"):
        return True, version + 1
    responses = answer.get("responses") or [{}]
    kvs = (responses[0].get("response_range") or {}).get("kvs") or [{}]
    try:
        now = int(kvs[0].get("version", 0))
    except (TypeError, ValueError):
        now = 0
    return False, now
