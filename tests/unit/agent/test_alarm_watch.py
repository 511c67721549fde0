"""The pause between cycles that a NOSPACE alarm ends: by an injected clock and a fake alarm
source, so no test waits for wall time; and which member the probe asks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest

from etcdagent.agent.alarm_watch import AlarmWatch, NospaceProbe
from etcdagent.errors import EtcdUnreachableError
from etcdagent.etcd.client import MemberClient
from etcdagent.settings import load_settings

NOSPACE_STATUS = {
    "header": {"member_id": "1"},
    "version": "3.5.1",
    "dbSize": "67108864",
    "errors": ["memberID:1470 alarm:NOSPACE "],
}
CLEAR_STATUS = {"header": {"member_id": "1"}, "version": "3.5.1", "dbSize": "4096"}


class Clock:
    """A monotonic clock that only the fake wait moves; ``wake_at`` sets the wake event."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []
        self.wake_at: float | None = None

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        if self.wake_at is not None and self.now + seconds >= self.wake_at:
            self.now = self.wake_at
            return True
        self.now += seconds
        return False


class Alarm:
    """A NOSPACE alarm raised at ``raised_at`` on the fake clock (None: never)."""

    def __init__(self, clock: Clock, raised_at: float | None) -> None:
        self.clock = clock
        self.raised_at = raised_at
        self.asked: list[float] = []

    def __call__(self) -> bool | None:
        self.asked.append(self.clock.now)
        return self.raised_at is not None and self.clock.now >= self.raised_at


def watch(clock: Clock, probe: Callable[[], bool | None]) -> AlarmWatch:
    return AlarmWatch(probe, wake=threading.Event(), monotonic=clock, wait=clock.wait)


def test_an_alarm_raised_during_the_pause_ends_it_within_about_a_second() -> None:
    clock = Clock()
    alarm = Alarm(clock, raised_at=103.4)

    assert watch(clock, alarm).sleep(60) is True

    assert 103.4 <= clock.now <= 104.5  # not the 60 s the interval would have waited


def test_without_an_alarm_the_pause_lasts_its_length_asking_about_once_a_second() -> None:
    clock = Clock()
    alarm = Alarm(clock, raised_at=None)

    assert watch(clock, alarm).sleep(15) is False

    assert clock.now == pytest.approx(115.0)
    assert 13 <= len(alarm.asked) <= 15  # cheap: one request a second, not a busy loop
    assert max(clock.waits) <= 1.0


def test_a_pause_shorter_than_a_poll_still_ends_on_time() -> None:
    clock = Clock()
    alarm = Alarm(clock, raised_at=None)

    assert watch(clock, alarm).sleep(0.3) is False

    assert clock.now == pytest.approx(100.3)
    assert alarm.asked == []  # the cycle due now looks at everything itself


def test_wake_ends_the_pause_at_once_without_asking_again() -> None:
    clock = Clock()
    clock.wake_at = 102.5  # a stop or reload asked for
    alarm = Alarm(clock, raised_at=None)

    assert watch(clock, alarm).sleep(60) is False

    assert clock.now == pytest.approx(102.5)
    assert len(alarm.asked) == 2


def test_a_failing_probe_never_ends_the_pause_early_nor_escapes() -> None:
    clock = Clock()

    def broken() -> bool | None:
        raise RuntimeError("a bug in the probe")

    assert watch(clock, broken).sleep(5) is False
    assert clock.now == pytest.approx(105.0)


def test_nobody_answering_is_not_an_alarm() -> None:
    clock = Clock()

    assert watch(clock, lambda: None).sleep(5) is False
    assert clock.now == pytest.approx(105.0)


def test_poll_must_be_positive() -> None:
    with pytest.raises(ValueError, match="poll"):
        AlarmWatch(lambda: None, wake=threading.Event(), poll=0)


# -- the probe: which member, what it reads ---------------------------------------------------


class FakeMember:
    def __init__(self, endpoint: str, answer: dict[str, Any] | None) -> None:
        self.endpoint = endpoint
        self.answer = answer  # None: does not answer
        self.calls: list[tuple[str, bool, float | None]] = []

    def call(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        *,
        retry: bool = True,
        timeout: float | None = None,
    ) -> Any:
        self.calls.append((path, retry, timeout))
        if self.answer is None:
            raise EtcdUnreachableError(f"{self.endpoint}: connection refused", transient=True)
        return self.answer


def members(*fakes: FakeMember) -> Callable[[], Sequence[MemberClient]]:
    return lambda: cast(list[MemberClient], list(fakes))


def test_probe_reads_nospace_from_the_first_member_that_answers() -> None:
    down = FakeMember("http://m1", None)
    up = FakeMember("http://m2", NOSPACE_STATUS)
    never = FakeMember("http://m3", CLEAR_STATUS)

    assert NospaceProbe(members(down, up, never))() is True

    assert never.calls == []  # one answer is enough: alarms are replicated
    assert up.calls == [("/maintenance/status", False, 2.0)]  # no retries, a short timeout


def test_probe_asks_the_member_that_answered_last_first() -> None:
    down = FakeMember("http://m1", None)
    up = FakeMember("http://m2", CLEAR_STATUS)
    probe = NospaceProbe(members(down, up))

    assert probe() is False
    assert probe() is False

    assert len(down.calls) == 1  # the second poll went straight to m2
    assert len(up.calls) == 2


def test_probe_without_any_answer_says_so() -> None:
    probe = NospaceProbe(members(FakeMember("http://m1", None), FakeMember("http://m2", None)))

    assert probe() is None


def test_probe_treats_a_malformed_answer_as_no_answer() -> None:
    odd = FakeMember("http://m1", {"errors": "not a list", "dbSize": "x"})
    up = FakeMember("http://m2", NOSPACE_STATUS)

    assert NospaceProbe(members(odd, up))() is True


def test_probe_against_a_real_client_that_cannot_connect() -> None:
    settings = load_settings({"connection": {"endpoints": ["http://127.0.0.1:1"]}})
    client = MemberClient("http://127.0.0.1:1", settings)
    try:
        assert NospaceProbe(lambda: [client], timeout=0.5)() is None
    finally:
        client.close()
