"""Load-test instrumentation of the server subprocess, through the server's public seams (no patching).

The launcher script of ``loadtests.server`` runs ``rehearsal.server.serve(settings, setup=recorder.attach)``
(``recorder = TickRecorder(data_dir)``) with ``settings.scenario_dir`` = ``loadtests/scenarios`` (the
capacity run's ~5k-tet block is offered beside the packaged scenarios). ``TickRecorder`` is a tick observer of
the server (``RehearsalServer.add_tick_observer``): it appends one record per room tick that ran a step to
``<data_dir>/ticks.f64`` (float64 quadruples: monotonic time, tick seconds, room number, publishing
seconds), for exact quantiles per phase, and one record of where its step's hand-back time went to
``<data_dir>/steps.f64`` (``STEP_COLUMNS``, from the room ticker's ``StepTiming``), and every collection of the
garbage collector to ``<data_dir>/gc.f64`` (``GC_COLUMNS``, from ``gc.callbacks``); a tick's seconds are the
ticker's hand-back time (queueing + physics + hand-back to the reactor) plus publishing (events, snapshot
encoding, sends). The server also observes whole ticks into ``rehearsal_tick_duration_seconds`` and publishing into
``rehearsal_publish_duration_seconds`` (``/metrics``).
"""

from __future__ import annotations

import contextlib
import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

TICK_FILE = "ticks.f64"
STEP_FILE = "steps.f64"
GC_FILE = "gc.f64"
# A collection of the cyclic garbage collector: monotonic time at its end, generation, seconds it took (it holds the
# GIL: every room's Python and the reactor wait for it).
GC_COLUMNS = ("t", "generation", "seconds")
# A step record: monotonic time, room number, then rehearsal.ticking.StepTiming's fields (seconds).
STEP_COLUMNS = ("t", "room", "queued", "advance", "advance_cpu", "after", "after_cpu", "returned")
FLUSH_SECONDS = 0.5
MAX_PENDING = 4096  # records kept in memory before they are written out


class TickRecorder:
    """Writes the server's tick records to ``<data_dir>/ticks.f64`` (see the module doc)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / TICK_FILE
        self.step_path = Path(data_dir) / STEP_FILE
        self.records: list[tuple[float, float, float, float]] = []
        self.steps: list[tuple[float, ...]] = []
        self.gc_path = Path(data_dir) / GC_FILE
        self.collections: list[tuple[float, float, float]] = []
        self._gc_started = 0.0
        self.rooms: Any = None  # the server's live rooms by session (``Sessions.rooms``), for their tickers' timing
        self.room_numbers: dict[str, int] = {}
        self.last_flush = time.monotonic()

    def attach(self, server: Any) -> None:
        """Observe ``server``'s ticks (``serve``'s ``setup``), and write what is left when its reactor stops."""
        sessions = getattr(server, "sessions", None)  # (a test's stand-in server may have none)
        self.rooms = getattr(sessions, "rooms", None)
        server.add_tick_observer(self.observe)
        server.reactor.addSystemEventTrigger("before", "shutdown", self.detach)
        gc.callbacks.append(self.on_gc)

    def detach(self) -> None:
        """Stop timing collections and write what is left (the reactor stops)."""
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self.on_gc)
        self.flush()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks``: time each collection (on whichever thread ran it; bounded like the tick records)."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif len(self.collections) < MAX_PENDING:
            seconds = time.perf_counter() - self._gc_started
            self.collections.append((time.monotonic(), float(info.get("generation", -1)), seconds))

    def observe(self, session: str, handback_seconds: float, publish_seconds: float) -> None:
        number = self.room_numbers.setdefault(session, len(self.room_numbers))
        now = time.monotonic()
        self.records.append((now, handback_seconds + publish_seconds, float(number), publish_seconds))
        live = self.rooms.get(session) if self.rooms is not None else None
        if live is not None and live.ticker is not None:
            t = live.ticker.stats.last_timing
            parts = (t.queued, t.advance, t.advance_cpu, t.after, t.after_cpu, t.returned)
            self.steps.append((now, float(number), *parts))
        if now - self.last_flush > FLUSH_SECONDS or len(self.records) > MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Append the pending records to the tick file (a failing disk loses them, never the server)."""
        self.last_flush = time.monotonic()
        for path, name in ((self.path, "records"), (self.step_path, "steps"), (self.gc_path, "collections")):
            rows = getattr(self, name)
            if not rows:
                continue
            setattr(self, name, [])
            try:
                with path.open("ab") as f:
                    f.write(np.asarray(rows, np.float64).tobytes())
            except OSError:
                pass


def _read_records(path: Path, width: int) -> np.ndarray:
    """The whole float64 records of ``width`` columns in ``path`` so far (none if it is missing); a record still
    being written is left out."""
    try:
        raw = path.read_bytes()
    except OSError:
        return np.zeros((0, width))
    usable = len(raw) - len(raw) % (8 * width)
    return np.frombuffer(raw[:usable], np.float64).reshape(-1, width)


def read_steps(data_dir: Path) -> np.ndarray:
    """The step records written so far: (n, len(STEP_COLUMNS)) float64."""
    return _read_records(Path(data_dir) / STEP_FILE, len(STEP_COLUMNS))


def read_collections(data_dir: Path) -> np.ndarray:
    """The garbage collections recorded so far: (n, len(GC_COLUMNS)) float64."""
    return _read_records(Path(data_dir) / GC_FILE, len(GC_COLUMNS))


def read_ticks(data_dir: Path) -> np.ndarray:
    """The tick records written so far: (n, 4) float64 (monotonic time, tick seconds, room number, publishing
    seconds; the rest of the tick is the step: queueing, physics, hand-back to the reactor)."""
    return _read_records(Path(data_dir) / TICK_FILE, 4)
