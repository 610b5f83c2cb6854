"""rehearsal.budget: token buckets spend or refuse, refill at their rate, and never hold more than their burst."""

import pytest

from rehearsal.budget import ConnectionBudget, TokenBucket


def test_a_bucket_spends_its_burst_then_refuses_then_refills():
    bucket = TokenBucket(10.0)
    assert all(bucket.take(1, 0.0) for _ in range(10))
    assert not bucket.take(1, 0.0)
    assert not bucket.take(1, 0.05)  # half a token came back: still not one
    assert bucket.take(1, 0.1)
    assert bucket.take(9, 10.0) and not bucket.take(2, 10.0)  # a long pause refills only up to the burst


def test_a_refused_take_spends_nothing():
    bucket = TokenBucket(10.0)
    assert not bucket.take(11, 0.0)
    assert bucket.take(10, 0.0)


def test_clock_going_backwards_adds_nothing():
    bucket = TokenBucket(10.0)
    assert bucket.take(10, 5.0)
    assert not bucket.take(1, 4.0)


def test_bad_rates_are_refused():
    with pytest.raises(ValueError):
        TokenBucket(0.0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, burst=0.0)


def test_each_connection_has_its_own_buckets():
    a, b = ConnectionBudget(), ConnectionBudget()
    while a.commands.take(1, 0.0):
        pass
    assert b.commands.take(1, 0.0)
