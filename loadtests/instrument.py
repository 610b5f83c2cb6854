"""Load-test instrumentation installed into the server subprocess (never imported by the server itself).

``install(data_dir, scenario_dir)`` is called by the launcher script of ``loadtests.server`` before
``rehearsal.server.serve`` runs. It adds, in the server subprocess only and without changing the server's
code or API:

* **tick records**: the server observes whole ticks into ``rehearsal_tick_duration_seconds``; for exact
  quantiles per phase, a subclass of ``RehearsalServer`` times ``_on_report`` (publishing: events, snapshot
  encoding, sends), adds the ticker's ``last_handback_seconds`` (queueing + physics + hand-back to the
  reactor) and appends one record per room tick to ``<data_dir>/ticks.f64`` (float64 quadruples: monotonic
  time, tick seconds, room number, publishing seconds).
* **scenarios**: ``*.toml`` files in ``scenario_dir`` are offered beside the packaged ones (the capacity
  run's ~5k-tet block lives in ``loadtests/scenarios``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

TICK_FILE = "ticks.f64"
FLUSH_SECONDS = 0.5


def install(data_dir: Path, scenario_dir: Path | None = None) -> None:
    """Patch ``rehearsal.server`` (in this process only) as the module doc says."""
    import rehearsal.scenario as scenario_module
    import rehearsal.server as server_module

    if scenario_dir is not None and Path(scenario_dir).is_dir():
        packaged = scenario_module.packaged_scenarios

        def with_extra() -> dict[str, Path]:
            found = packaged()
            for path in sorted(Path(scenario_dir).glob("*.toml")):
                found.setdefault(path.stem, path)
            return found

        scenario_module.packaged_scenarios = with_extra
        server_module.packaged_scenarios = with_extra

    base = server_module.RehearsalServer
    tick_path = Path(data_dir) / TICK_FILE

    class InstrumentedServer(base):  # type: ignore[misc, valid-type]
        """The server with whole-tick timing (see the module doc)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._tick_records: list[tuple[float, float, float, float]] = []
            self._room_numbers: dict[str, int] = {}
            self._last_flush = time.monotonic()

        def _on_report(self, room: Any, report: Any) -> None:
            started = time.perf_counter()
            super()._on_report(room, report)
            if report is None:
                return
            live = self.rooms.get(room.session)
            if live is None:
                return
            publish = time.perf_counter() - started
            tick = live.ticker.stats.last_handback_seconds + publish
            number = self._room_numbers.setdefault(room.session, len(self._room_numbers))
            now = time.monotonic()
            self._tick_records.append((now, tick, float(number), publish))
            if now - self._last_flush > FLUSH_SECONDS or len(self._tick_records) > 4096:
                self.flush_ticks()

        def flush_ticks(self) -> None:
            self._last_flush = time.monotonic()
            if not self._tick_records:
                return
            records, self._tick_records = self._tick_records, []
            try:
                with tick_path.open("ab") as f:
                    f.write(np.asarray(records, np.float64).tobytes())
            except OSError:
                pass

        def stop(self):
            self.flush_ticks()
            return super().stop()

    server_module.RehearsalServer = InstrumentedServer


def read_ticks(data_dir: Path) -> np.ndarray:
    """The tick records written so far: (n, 4) float64 (monotonic time, tick seconds, room number, publishing
    seconds; the rest of the tick is the step: queueing, physics, hand-back to the reactor)."""
    try:
        raw = (Path(data_dir) / TICK_FILE).read_bytes()
    except OSError:
        return np.zeros((0, 4))
    usable = len(raw) - len(raw) % 32
    return np.frombuffer(raw[:usable], np.float64).reshape(-1, 4)
