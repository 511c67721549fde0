"""The agents' record of each member's defragmentations, read back from etcd.

The act layer writes one key per member under ``/etcdagent/defrag/`` (member ID in hex) before
and after each defragmentation; every replica and every CronJob run reads them here, so a
member's own history estimates its next defrag wherever the agent runs. A value that does not
parse is ignored (a foreign write), never trusted.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from etcdagent.etcd.client import MemberClient
from etcdagent.observe.snapshot import DefragRecord

DEFRAG_PREFIX = "/etcdagent/defrag/"


def defrag_key(member_id: int) -> str:
    """The member's key: its ID in hex, as etcdctl prints it."""
    return f"{DEFRAG_PREFIX}{member_id:x}"


def parse_record(value: bytes) -> DefragRecord | None:
    try:
        return DefragRecord.model_validate(json.loads(value))
    except (ValueError, ValidationError):
        return None


def read_defrag_records(member: MemberClient) -> dict[int, DefragRecord]:
    """Every readable record by member ID (one range request)."""
    records: dict[int, DefragRecord] = {}
    for kv in member.range_prefix(DEFRAG_PREFIX).kvs:
        suffix = kv.key.decode(errors="replace").removeprefix(DEFRAG_PREFIX)
        try:
            member_id = int(suffix, 16)
        except ValueError:
            continue
        record = parse_record(kv.value)
        if record is not None:
            records[member_id] = record
    return records
