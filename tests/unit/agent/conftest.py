"""Fixtures shared by the daemon's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etcdagent.agent.daemon import Daemon


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """The daemons a test builds, their clients closed at the end."""
    made: list[Daemon] = []
    yield made
    for daemon in made:
        daemon.cluster.close()
