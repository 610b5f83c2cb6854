"""Clock sync: NTP arithmetic, convergence under asymmetric jitter, and no backward jumps (slew)."""

from __future__ import annotations

import itertools
import random

import pytest

from netcode.thin_client.clock_sync import ClockSync, ClockSyncConfig, ntp_sample, slew, target_offset

TRUE_OFFSET = 1234.5  # server clock - local clock
FRAME = 1.0 / 90.0


def test_ntp_sample_arithmetic():
    # 10 ms up, 5 ms hold, 30 ms down, offset 100 s: rtt 40 ms, offset biased by (10 - 30) / 2
    s = ntp_sample(0.0, 100.010, 100.015, 0.045)
    assert s.rtt == pytest.approx(0.040)
    assert s.offset == pytest.approx(100.0 - 0.010)


def test_target_uses_lowest_rtt_samples_and_slew_is_bounded():
    from netcode.thin_client.clock_sync import ClockSample

    samples = [ClockSample(0.2, 5.0), ClockSample(0.01, 1.0), ClockSample(0.02, 1.2), ClockSample(0.3, -4.0)]
    assert target_offset(samples, 2) == pytest.approx(1.1)
    assert slew(0.0, 1.0, 0.1, slew_time=0.5, max_slew=0.05) == pytest.approx(0.005)
    assert slew(0.0, 0.001, 1.0, slew_time=0.5, max_slew=0.05) == pytest.approx(0.001)  # no overshoot
    assert slew(0.0, -1.0, 0.1, slew_time=0.5, max_slew=0.05) == pytest.approx(-0.005)


def _exchange(rng: random.Random, t0: float, offset: float) -> tuple[float, float, float, float]:
    """Symmetric 25 ms base, asymmetric jitter: uplink exp(5 ms), downlink exp(30 ms); 2 ms server hold."""
    up = 0.025 + rng.expovariate(1 / 0.005)
    down = 0.025 + rng.expovariate(1 / 0.030)
    t1 = t0 + up + offset
    t2 = t1 + 0.002
    t3 = t0 + up + 0.002 + down
    return t0, t1, t2, t3


def run(sync: ClockSync, offset_of, seconds: float, seed: int = 7, start: float = 10.0):
    """Exchanges at 30 Hz (acks of inputs), server_now read every display frame; returns the readings."""
    rng = random.Random(seed)
    readings = []
    pending = []  # exchanges in flight: (t3, exchange)
    next_exchange = start
    t = start
    while t < start + seconds:
        if t >= next_exchange:
            ex = _exchange(rng, t, offset_of(t))
            pending.append(ex)
            next_exchange += 1 / 30
        for ex in [e for e in pending if e[3] <= t]:
            pending.remove(ex)
            sync.add_exchange(*ex)
        readings.append((t, sync.server_now(t)))
        t += FRAME
    return readings


def test_converges_under_asymmetric_jitter():
    sync = ClockSync()
    run(sync, lambda t: TRUE_OFFSET, seconds=10.0)
    error = abs(sync.offset(20.0) - TRUE_OFFSET)
    assert error < 0.002, error
    # the naive estimate (mean of all samples) is biased by the asymmetric jitter; the filter is not
    rng = random.Random(7)
    naive = [ntp_sample(*_exchange(rng, 0.0, TRUE_OFFSET)).offset for _ in range(300)]
    naive_error = abs(sum(naive) / len(naive) - TRUE_OFFSET)
    assert naive_error > 5 * error
    assert sync.rtt is not None and 0.05 <= sync.rtt < 0.06


def test_server_now_never_jumps_backwards_when_the_server_clock_steps_back():
    sync = ClockSync()
    # after 5 s the server clock is set back by 200 ms
    readings = run(sync, lambda t: TRUE_OFFSET if t < 15.0 else TRUE_OFFSET - 0.2, seconds=20.0)
    max_slew = sync.config.max_slew
    for (ta, sa), (tb, sb) in itertools.pairwise(readings):
        assert sb - sa >= (1.0 - max_slew) * (tb - ta) - 1e-9  # always advances, at >= 95% speed
    assert sync.steps == 1  # only the first sample stepped
    # and it got there by slewing: within 2 ms after 200 ms / 50 ms/s = 4 s plus the settling tail
    assert abs(sync.offset(readings[-1][0]) - (TRUE_OFFSET - 0.2)) < 0.002


def test_forward_error_beyond_threshold_steps_once():
    sync = ClockSync(ClockSyncConfig(window=8, best=2))
    readings = run(sync, lambda t: TRUE_OFFSET if t < 12.0 else TRUE_OFFSET + 5.0, seconds=6.0)
    assert 2 <= sync.steps <= 3  # the first sample, then forward steps while the window mixes old and new
    assert all(b[1] > a[1] for a, b in itertools.pairwise(readings))
    assert abs(sync.offset(readings[-1][0]) - (TRUE_OFFSET + 5.0)) < 0.002


def test_rejects_impossible_exchanges():
    sync = ClockSync()
    assert sync.add_exchange(1.0, 5.0, 5.0, 0.5) is None  # receive before send
    assert sync.add_exchange(0.0, float("nan"), 1.0, 1.0) is None
    assert not sync.synchronised and sync.server_now(3.0) == 3.0
