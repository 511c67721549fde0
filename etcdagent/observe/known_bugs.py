"""etcd releases with known serious bugs: the list shipped beside this module, read once.

The list (``known_etcd_bugs.json``) is data, not code, so that it can be reviewed and dated on its
own: each entry has its source and the date the source was published, and the file the date it
was last reviewed. ``decide.doctor`` matches the members' versions against it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict

from etcdagent.models import release

DATA_FILE = "known_etcd_bugs.json"


class KnownBug(BaseModel):
    """One bug and the inclusive range of releases it affects."""

    model_config = ConfigDict(frozen=True)

    id: str
    first: str
    last: str
    fixed_in: str
    severity: str  # info, warning or critical
    summary: str
    action: str
    source: str
    published: str

    def affects(self, version: str) -> bool:
        ours, low, high = release(version), release(self.first), release(self.last)
        return ours is not None and low is not None and high is not None and low <= ours <= high


class KnownBugs(BaseModel):
    model_config = ConfigDict(frozen=True)

    reviewed: str
    bugs: tuple[KnownBug, ...]


@cache
def load_known_bugs() -> KnownBugs:
    """The shipped list (a broken file is a packaging bug: it raises)."""
    text = resources.files("etcdagent.observe").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return KnownBugs.model_validate(json.loads(text))
