"""kube-apiserver's compaction key, ``compact_rev_key``, as one read shows it.

Each kube-apiserver compacts etcd every ``--etcd-compaction-interval`` (5m by default) with one
compare-and-swap transaction on this key: if the key's *version* is still the one this apiserver
last saw, put the revision it saw one interval ago as the value, then compact to that revision;
otherwise only learn the current version and value. The version is a logical clock every
apiserver shares, so the cluster compacts once per interval whichever apiserver wins, and keeps
one interval of history. Since Kubernetes 1.34 the apiservers also read the value to trim their
watch caches. The agent reads the key to know whether an apiserver compacts (``decide.apiserver``)
and, when it compacts itself, moves the key in the same transaction (``act.compaction_step``).

Beside it the agent keeps ``AGENT_MOVE_KEY``, written in the same transaction as each of its own
moves of ``compact_rev_key``: equal mod revisions say the last move was the agent's, not an
apiserver's (the value must stay a bare integer, which the apiservers parse).

The model only (decide reads it); ``compact_rev_key_read`` reads it from a member.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

COMPACT_REV_KEY = b"compact_rev_key"
AGENT_MOVE_KEY = b"/etcdagent/compact-rev-key"


class CompactRevKey(BaseModel):
    """The key as read at ``revision``; ``version`` 0: it does not exist."""

    model_config = ConfigDict(frozen=True)

    revision: int  # the store revision of the read
    version: int = 0
    value: int | None = None  # what the last mover compacted to; None: absent or not a number
    mod_revision: int = 0
    agent_revision: int = 0  # mod revision of AGENT_MOVE_KEY (0: the agent never moved it)

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def by_agent(self) -> bool:
        """Whether the last move was an etcdagent's (same transaction as its own record)."""
        return self.exists and self.mod_revision == self.agent_revision


def parse_value(raw: bytes) -> int | None:
    """The revision an apiserver (or the agent) stored; None for anything else."""
    try:
        value = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return value if value >= 0 else None
