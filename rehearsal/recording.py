"""Session recordings: everything needed to re-simulate a room, tick by tick, for a debrief.

The physics is deterministic (bit-identical for any thread count), so a recording holds only what
drives it: the scenario, then per simulated tick the time step, the substeps in use and each
instrument's command, and the world changes (complications, resets) at the tick they took effect. A
replay rebuilds the world from the scenario and feeds the same sequence through ``Room.advance``.

File format: a stream of msgpack maps (``"t"`` says which)::

    {"t": "header", "version": 3, "session": str, "scenario": name, "source": scenario file, "tick_hz": int}
    {"t": "settled", "frames": int}
    {"t": "tick", "dt": float, "n": substeps, "c": [[id, kind, px, py, pz, qw, qx, qy, qz, jaw, energy], ...],
     "s": [sample time (s) or None, ...]}
    {"t": "inject", "id": complication id}
    {"t": "reset", "settled": int}
    {"t": "command", "by": participant, "action": str, "args": {...}}
    {"t": "fixture", "kind": str, "by": participant, "instrument": physics id, "detail": {...}}
    {"t": "end", "state": room state, "truncated": records left out at the size limit}

Version 2 added the tick's ``"s"``: the headset sample time of each row's pose (aligned with ``"c"``; None
where unknown), which the skill metrics differentiate at (rehearsal.skill_metrics), so a replay scores
exactly as the live room did; and ``"command"``: an accepted mentor or nurse command (for the debrief's
timeline; it changes nothing on replay, its world changes have their own records), written before the
tick it preceded; ``"fixture"``: a virtual fixture's event (``fixture_violation``, ``energy_cut``:
rehearsal/fixtures.py) for the timeline, also written before the tick it preceded (the tick's control is the
enforced one, so a replay does not enforce again). Version 1 files still read (their metrics use tick times).

A recording stops growing at ``max_bytes`` (but for its end record; counted in ``truncated``), so an
endless session cannot fill the disk; writes are buffered and flushed every ``FLUSH_EVERY`` records.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np

from physics import Control, InstrumentInput
from physics.instruments import SPECS, Kind
from rehearsal.scenario import Scenario

VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAX_PENDING_COMMANDS = 256
FLUSH_EVERY = 600
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
MAX_RECORD_BYTES = 1 << 20


class RecordingError(ValueError):
    """A recording file that cannot be replayed (not ours, truncated inside a record, wrong version)."""


def control_rows(control: Control) -> list[list]:
    """A Control as plain rows for msgpack."""
    return [
        [i.id, i.spec.kind.value, *_floats(i.position), *_floats(i.orientation), float(i.jaw), bool(i.energy)]
        for i in control.instruments
    ]


def _floats(values: object) -> list[float]:
    """Plain floats (``tolist`` for arrays: a row is written for every instrument every tick)."""
    return values.tolist() if isinstance(values, np.ndarray) else [float(v) for v in values]


def control_from_rows(rows: object) -> Control:
    """The Control recorded as ``rows`` (raises RecordingError on anything malformed)."""
    if not isinstance(rows, list):
        raise RecordingError("tick controls must be a list")
    inputs = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 11 and isinstance(row[0], int) and row[1] in SPECS):
            raise RecordingError(f"malformed instrument row {row!r:.80}")
        values = np.asarray(row[2:10], dtype=np.float64)
        inputs.append(InstrumentInput(row[0], SPECS[Kind(row[1])](), values[:3], values[3:7], values[7], bool(row[10])))
    return Control(inputs)


def _time_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _plain(value: object, depth: int = 0) -> Any:
    """A command's arguments as msgpack-able plain values (arrays as lists; anything odd as its repr)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:256]
    if depth < 3 and isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value[:16]]
    if depth < 3 and isinstance(value, dict):
        return {str(k)[:64]: _plain(v, depth + 1) for k, v in list(value.items())[:16]}
    return repr(value)[:64]


def sample_times_from(record: dict[str, Any]) -> dict[int, float]:
    """A tick record's sample times by instrument id ({} for a version-1 tick; RecordingError if malformed)."""
    stamps, rows = record.get("s"), record.get("c")
    if stamps is None:
        return {}
    if not (isinstance(stamps, list) and isinstance(rows, list) and len(stamps) == len(rows)):
        raise RecordingError("a tick's sample times must be a list beside its controls")
    times = {}
    for row, stamp in zip(rows, stamps, strict=True):
        if stamp is None:
            continue
        if not (isinstance(stamp, int | float) and math.isfinite(stamp) and isinstance(row, list) and row):
            raise RecordingError(f"malformed sample time {stamp!r:.40}")
        times[row[0]] = float(stamp)
    return times


class Recorder:
    """Appends one room's records to a file (owner-only permissions: recordings show what people did)."""

    def __init__(
        self,
        path: Path,
        session: str,
        scenario: Scenario,
        max_bytes: int = DEFAULT_MAX_BYTES,
        resume_at: dict | None = None,
    ) -> None:
        """A new recording, or (``resume_at``: a ``position()`` taken earlier) the same file cut back to that
        position and continued: a room resumed from a checkpoint records on from the checkpoint's tick."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.bytes = 0
        self.records = 0
        self.truncated = 0
        # Commands arrive on the reactor thread, ticks are written on the room's thread: commands wait here
        # (deque appends are thread-safe) and the next tick or close() writes them, so one thread writes.
        self._commands: deque[dict[str, Any]] = deque()
        if resume_at is not None:
            at = _position(resume_at)
            handle = open(path, "r+b", buffering=1 << 16)  # noqa: SIM115 (closed in close())
            size = handle.seek(0, 2)
            if size < at["bytes"]:
                handle.close()
                raise RecordingError(f"{path}: {size} bytes on disk, the checkpoint knew {at['bytes']}")
            handle.truncate(at["bytes"])
            handle.seek(at["bytes"])
            self._file: IO[bytes] | None = handle
            self.bytes, self.records, self.truncated = at["bytes"], at["records"], at["truncated"]
            return
        self._file = open(path, "wb", buffering=1 << 16)  # noqa: SIM115 (closed in close())
        path.chmod(0o600)
        header = {"t": "header", "version": VERSION, "session": session, "scenario": scenario.name}
        self._write({**header, "source": str(scenario.source), "tick_hz": scenario.tick_hz})

    def settled(self, frames: int) -> None:
        """How many frames the world settled before the first tick (written only into a fresh recording, after
        its header: a resumed one has it already)."""
        if self.records == 1:
            self._write({"t": "settled", "frames": int(frames)})

    def flush(self) -> None:
        """Hand what is buffered to the OS (a checkpoint then knows the file holds ``position()``)."""
        if self._file is not None:
            self._file.flush()

    def position(self) -> dict:
        """How far the recording has got (bytes, records, truncated), to resume from."""
        return {"bytes": self.bytes, "records": self.records, "truncated": self.truncated}

    def _write(self, record: dict[str, Any], always: bool = False) -> None:
        if self._file is None:
            return
        data = msgpack.packb(record)
        if self.bytes + len(data) > self.max_bytes and not always:
            self.truncated += 1
            return
        self._file.write(data)
        self.bytes += len(data)
        self.records += 1
        if self.records % FLUSH_EVERY == 0:
            self._file.flush()

    def tick(self, dt: float, substeps: int, control: Control, sample_times: dict[int, float] | None = None) -> None:
        """One simulated tick: its step, the control physics got, and each pose's sample time (by id)."""
        self._write_commands()
        times = sample_times or {}
        rows = control_rows(control)
        stamps = [_time_or_none(times.get(row[0])) for row in rows]
        self._write({"t": "tick", "dt": float(dt), "n": int(substeps), "c": rows, "s": stamps})

    def command(self, by: int, action: str, args: dict[str, Any]) -> None:
        """An accepted command (any thread); written before the next tick (beyond a backlog: truncated)."""
        if len(self._commands) >= MAX_PENDING_COMMANDS:
            self.truncated += 1
            return
        self._commands.append({"t": "command", "by": int(by), "action": str(action), "args": _plain(args)})

    def fixture_event(self, kind: str, by: int, instrument: int, detail: dict[str, Any]) -> None:
        """A virtual fixture's event (the room's thread building the control); written like a command."""
        if len(self._commands) >= MAX_PENDING_COMMANDS:
            self.truncated += 1
            return
        record = {"t": "fixture", "kind": str(kind), "by": int(by), "instrument": int(instrument)}
        self._commands.append({**record, "detail": _plain(detail)})

    def _write_commands(self) -> None:
        while self._commands:
            self._write(self._commands.popleft())

    def effect(self, kind: str, **fields: Any) -> None:
        """A world change (``inject`` with ``id``, or ``reset``) that took effect before the next tick."""
        self._write({"t": kind, **fields})

    def close(self, state: str) -> None:
        if self._file is not None:
            self._write_commands()
            self._write({"t": "end", "state": state, "truncated": self.truncated}, always=True)
            self._file.close()
            self._file = None


def _position(value: object) -> dict:
    if not (isinstance(value, dict) and all(isinstance(value.get(k), int) for k in ("bytes", "records", "truncated"))):
        raise RecordingError(f"not a recording position: {value!r:.80}")
    return value


def read_recording(path: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The header and an iterator over the remaining records (validated as they are read)."""
    handle = open(path, "rb")  # noqa: SIM115 (the generator closes it)
    unpacker = msgpack.Unpacker(handle, raw=False, max_buffer_size=MAX_RECORD_BYTES, strict_map_key=True)
    try:
        header = next(unpacker)
    except (StopIteration, ValueError, msgpack.UnpackException) as exc:
        handle.close()
        raise RecordingError(f"{path}: not a recording ({exc or 'empty'})") from None
    if not (isinstance(header, dict) and header.get("t") == "header"):
        handle.close()
        raise RecordingError(f"{path}: not a recording (no header)")
    if header.get("version") not in READABLE_VERSIONS:
        handle.close()
        *first, last = map(str, READABLE_VERSIONS)
        readable = f"{', '.join(first)} and {last}" if first else last
        raise RecordingError(
            f"{path}: a version-{header.get('version')!r:.20} recording; this reads versions {readable}"
        )
    for key, kind in (("session", str), ("scenario", str), ("tick_hz", int)):
        if not isinstance(header.get(key), kind):
            handle.close()
            raise RecordingError(f"{path}: header field {key!r} missing or not {kind.__name__}")

    def records() -> Iterator[dict[str, Any]]:
        with handle:
            try:
                for record in unpacker:
                    if not (isinstance(record, dict) and isinstance(record.get("t"), str)):
                        raise RecordingError(f"{path}: malformed record {record!r:.80}")
                    yield record
            except (ValueError, msgpack.UnpackException) as exc:
                raise RecordingError(f"{path}: corrupt after {unpacker.tell()} bytes: {exc}") from None

    return header, records()
