"""Consumers of a timeline (``timeline/_consumers.py`` K1-K3), on a hand-driven clock."""

from __future__ import annotations

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.timeline import ConsumerPositions


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_k1_a_reconnecting_consumer_takes_over_its_entry() -> None:
    positions = ConsumerPositions(Clock())
    with positions.streaming(slot=None, application_name="standby1", remote="a:1",
                             start_lsn=Lsn(0x100)) as first:
        pass
    with positions.streaming(slot=None, application_name="standby1", remote="b:2",
                             start_lsn=Lsn(0x200)) as second:
        assert second is first
        assert (second.remote, second.start_lsn, second.connected) == ("b:2", Lsn(0x200), True)
    names = [ConsumerPositions.name_for("s", "app", "x:1"),
             ConsumerPositions.name_for(None, "app", "x:1"),
             ConsumerPositions.name_for(None, "", "x:1")]
    assert names == ["slot:s", "app:app", "addr:x:1"]


def test_k2_position_is_the_flush_else_the_start() -> None:
    positions = ConsumerPositions(Clock())
    with positions.streaming(slot="s", application_name="", remote="a:1",
                             start_lsn=Lsn(0x100)) as c:
        assert c.position == Lsn(0x100)
        c.flush_lsn = Lsn(0)  # pg_receivewal without a slot or --synchronous
        assert c.position == Lsn(0x100)
        c.flush_lsn = Lsn(0x180)
        assert c.position == Lsn(0x180)


def test_k3_a_gone_consumer_holds_for_the_window_then_is_forgotten() -> None:
    clock = Clock()
    positions = ConsumerPositions(clock)
    with positions.streaming(slot=None, application_name="a", remote="a:1",
                             start_lsn=Lsn(0x100)):
        clock.now += 10_000
        assert positions.holds(clock.now, 60) == [Lsn(0x100)]  # connected: always
    clock.now += 59
    assert positions.holds(clock.now, 60) == [Lsn(0x100)]
    clock.now += 2
    assert positions.holds(clock.now, 60) == []
    assert positions.all() == []
