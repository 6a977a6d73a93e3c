"""The breaker's pure transitions: closed -> open at the threshold, half-open after the recovery time with a bounded
number of probes, closed on success, open again on a failed probe."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sos_kernel.providers.breaker import CLOSED, BreakerConfig, BreakerState, admit, record

CFG = BreakerConfig(failure_threshold=3, recovery_s=10.0, half_open_max=1, probe_lease_s=20.0)


def test_closed_opens_after_the_threshold_of_consecutive_failures() -> None:
    s = CLOSED
    for n in (1, 2):
        s = record(s, CFG, False, 100.0)
        assert (s.state, s.failures) == ("closed", n)
    assert record(record(s, CFG, True, 100.0), CFG, False, 100.0).failures == 1  # a success resets the count
    s = record(s, CFG, False, 100.0)
    assert (s.state, s.since) == ("open", 100.0)
    assert admit(s, CFG, 109.9) is None


def test_half_open_admits_one_probe_then_closes_or_reopens() -> None:
    opened = BreakerState("open", 3, 100.0, 0)
    probing = admit(opened, CFG, 110.0)
    assert probing == BreakerState("half_open", 3, 110.0, 1)
    assert admit(probing, CFG, 111.0) is None  # one probe at a time
    assert record(probing, CFG, True, 112.0) == CLOSED
    assert record(probing, CFG, False, 112.0) == BreakerState("open", 4, 112.0, 0)


def test_a_probe_that_never_reports_is_replaced_after_its_lease() -> None:
    probing = BreakerState("half_open", 3, 110.0, 1)
    assert admit(probing, CFG, 129.9) is None
    assert admit(probing, CFG, 130.0) == BreakerState("half_open", 3, 130.0, 1)


def test_a_zero_threshold_never_opens_and_zero_probes_means_one() -> None:
    never = BreakerConfig(failure_threshold=0, half_open_max=0)
    s = CLOSED
    for _ in range(100):
        s = record(s, never, False, 1.0)
    assert s.state == "closed"
    assert admit(BreakerState("half_open", 1, 0.0, 0), never, 0.0) is not None


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0, 5)), max_size=60))
def test_any_history_keeps_the_invariants(events: list[tuple[bool, bool, float]]) -> None:
    s, now = CLOSED, 0.0
    for is_call, ok, dt in events:
        now += dt
        s = admit(s, CFG, now) or s if is_call else record(s, CFG, ok, now)
        assert s.state in ("closed", "open", "half_open")
        assert 0 <= s.probes <= CFG.half_open_max
        assert s.state != "closed" or s.failures < CFG.failure_threshold
        assert s.state == "half_open" or s.probes == 0
