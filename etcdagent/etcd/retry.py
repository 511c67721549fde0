"""When a failed call is asked again: transient failures only, backing off, under a deadline.

Transient means the member may answer next time (refused, reset, timed out, 503, no leader); any
other refusal (bad request, permission denied, NOSPACE) is raised at once, since asking again only
delays the same answer. Calls that a client-side timeout does not cancel on the server
(defragment, move-leader) are never retried: the caller sends them once and re-checks instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from etcdagent.clock import Sleep
from etcdagent.errors import EtcdError

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, EtcdError) and exc.transient


class RetryPolicy:
    """Retries a call while it fails transiently, until ``deadline`` seconds have passed.

    The waits grow from 50 ms to 1 s, with up to 50 ms of jitter so the clients of several
    members do not come back in step. ``sleep`` is injected by tests.
    """

    def __init__(self, deadline: float, sleep: Sleep = time.sleep) -> None:
        self.deadline = deadline
        self._sleep = sleep

    def __call__(self, fn: Callable[[], T]) -> T:
        # A Retrying object keeps the state of one call's attempts: a fresh one per call.
        retrying = Retrying(
            stop=stop_after_delay(self.deadline),
            wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
            retry=retry_if_exception(is_transient),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(fn)
