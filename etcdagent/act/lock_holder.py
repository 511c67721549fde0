"""Who holds the maintenance lock: the name a holder writes under the lock key, and reading it.

The value of the key is all another process learns of the holder, so it names what an operator
needs to find it: the node, the process, and what it is doing.
"""

from __future__ import annotations

import os
import socket

from etcdagent.etcd.client import MemberClient

LOCK_KEY = "/etcdagent/lock"  # under the reserved prefix /etcdagent/


def default_holder(purpose: str) -> str:
    """``etcdagent@<hostname> pid <pid> (<purpose>)``: what an operator needs to find the holder
    (which node, which process, doing what) when ``status`` says maintenance is already running."""
    base = f"etcdagent@{socket.gethostname()} pid {os.getpid()}"
    return f"{base} ({purpose})" if purpose else base


def current_holder(member: MemberClient, key: str = LOCK_KEY) -> str | None:
    """Who holds the lock now (the holder string written by the winner), None when it is free.

    For status and dry-run output only: the answer may be stale by the time it is printed.
    """
    value = member.get(key)
    return None if value is None else value.decode("utf-8", errors="replace")
