"""The debrief service: one build per session however many ask at once, off the reactor thread, errors as
statuses, and a cache bounded by count and bytes."""

import threading
from pathlib import Path

import pytest

from rehearsal.debrief import Debrief
from rehearsal.recording import RecordingError
from rehearsal.web.debrief import DebriefCache, DebriefError, DebriefService


class ThreadedPool:
    """A thread pool stand-in: runs each job on a new thread, as twisted's would (deferToThreadPool's API)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):  # noqa: N802 (twisted's name)
        def run():
            try:
                on_result(True, f(*args, **kwargs))
            except Exception as exc:  # delivered as a Failure, as twisted does
                from twisted.python.failure import Failure

                on_result(False, Failure(exc))

        thread = threading.Thread(target=run)
        self.threads.append(thread)
        thread.start()


class FakeReactor:
    """callFromThread queues; ``run_pending`` plays the queue on the test's (the 'reactor') thread."""

    def __init__(self) -> None:
        self.pool = ThreadedPool()
        self.pending: list = []

    def getThreadPool(self):  # noqa: N802
        return self.pool

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802
        self.pending.append((f, args, kwargs))

    def run_pending(self) -> None:
        for thread in self.pool.threads:
            thread.join(10)
        while self.pending:
            f, args, kwargs = self.pending.pop(0)
            f(*args, **kwargs)


def outcome(d):
    box = []
    d.addBoth(box.append)
    return box


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "s.rec"
    path.write_bytes(b"x")
    return path


def test_one_build_per_session_off_the_reactor_thread_then_cached(recording):
    reactor, calls = FakeReactor(), []
    release = threading.Event()

    def build(path: Path, stored: dict) -> Debrief:
        calls.append(threading.current_thread())
        release.wait(5)
        return Debrief({"session": stored["session"]}, b"track")

    service = DebriefService(reactor, lambda s: {"session": s, "recording": str(recording)}, lambda r: None, build)
    first, second = outcome(service.debrief("s")), outcome(service.debrief("s"))
    release.set()
    reactor.run_pending()
    assert len(calls) == 1 and calls[0] is not threading.current_thread()
    assert first[0].track == b"track" and second[0] is first[0]
    third = outcome(service.debrief("s"))
    assert third[0] is first[0] and len(calls) == 1  # from the cache


def test_errors_are_statuses_with_a_sentence(recording, tmp_path):
    reactor = FakeReactor()

    def broken(path, stored):
        raise RecordingError(f"{path}: corrupt after 12 bytes")

    results = {
        "gone": {"session": "gone", "recording": str(tmp_path / "missing.rec")},
        "bad": {"recording": str(recording)},
    }
    service = DebriefService(reactor, results.get, lambda r: None, broken)
    for session, status, text in (("unknown", 404, "no finished session"), ("gone", 404, "kept no recording")):
        (failure,) = outcome(service.debrief(session))
        assert failure.check(DebriefError) and failure.value.status == status and text in failure.value.text
    box = outcome(service.debrief("bad"))
    reactor.run_pending()
    assert box[0].value.status == 422 and "corrupt after 12 bytes" in box[0].value.text
    assert service.counters["failed"] == 1


def test_the_cache_is_bounded_by_count_and_bytes():
    cache = DebriefCache(max_items=2, max_bytes=10_000)
    for name in "abc":
        cache.put(name, Debrief({}, b"x" * 100))
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") is not None
    cache.put("big", Debrief({}, b"x" * 6_000))
    cache.put("bigger", Debrief({}, b"x" * 6_000))
    assert cache.get("big") is None and cache.bytes <= 10_000
    cache.put("huge", Debrief({}, b"x" * 20_000))  # larger than the cache: not kept
    assert cache.get("huge") is None and cache.bytes <= 10_000
