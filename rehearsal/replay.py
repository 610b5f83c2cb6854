"""Re-simulate a recorded session (rehearsal.recording) for a debrief: same scenario, same commands, same
world changes at the same ticks, so the same tissue, steps and complications come out."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from physics import StepReport
from rehearsal.recording import RecordingError, control_from_rows, read_recording, sample_times_from
from rehearsal.room import Room
from rehearsal.scenario import ScenarioError, load_scenario

MAX_SUBSTEPS = 400
MAX_SETTLE_FRAMES = 100_000  # physics.settle's own limit


def _settle_frames(path: Path, value: object) -> int:
    """A recorded settle frame count, checked (RecordingError if it is not one)."""
    if not (type(value) is int and 0 <= value <= MAX_SETTLE_FRAMES):
        raise RecordingError(f"{path}: malformed settled frame count {value!r:.40}")
    return value


def replay(
    path: Path,
    on_tick: Callable[[Room], None] | None = None,
    max_ticks: int | None = None,
    *,
    on_step: Callable[[Room, StepReport | None], None] | None = None,
    on_record: Callable[[Room, dict[str, Any]], None] | None = None,
) -> Room:
    """The room as it stood at the end of the recording (or after ``max_ticks`` ticks).

    ``on_step`` sees each tick's physics report (its grasps, cuts, tears, topology) and ``on_record`` each
    record that is not a tick as it is read (world changes, commands): what a debrief builds its timeline of."""
    header, records = read_recording(path)
    source = Path(str(header.get("source", "")))
    try:
        scenario = load_scenario(source if source.is_file() else header["scenario"])
    except ScenarioError as exc:
        raise RecordingError(f"{path}: its scenario cannot be loaded: {exc}") from None
    first = next(records, None)
    settle_frames: int | None = None  # a version-3 file without the record: settled as a room settles
    if header.get("version", 1) < 3:  # recorded before rooms settled: the world started at its rest shape
        settle_frames = 0
    elif first is not None and first["t"] == "settled":
        settle_frames = _settle_frames(path, first.get("frames"))
    room = Room(header["session"], scenario, settle_frames=settle_frames)
    room.start()
    ticks = 0
    for record in itertools.chain([] if first is None or first["t"] == "settled" else [first], records):
        kind = record["t"]
        if kind == "tick":
            dt, substeps = record.get("dt"), record.get("n")
            valid_dt = isinstance(dt, float) and 0 < dt <= 1
            if not (valid_dt and isinstance(substeps, int) and 1 <= substeps <= MAX_SUBSTEPS):
                raise RecordingError(f"{path}: malformed tick record")
            report = room.advance(dt, substeps, control_from_rows(record.get("c")), sample_times_from(record))
            ticks += 1
            if on_step is not None:
                on_step(room, report)
            if on_tick is not None:
                on_tick(room)
            if max_ticks is not None and ticks >= max_ticks:
                break
            continue
        if on_record is not None:
            on_record(room, record)
        if kind == "reset":
            settled = record.get("settled")  # the frames the reset world settled (version 3; before: none)
            room.queue_effect(kind, -1, 0 if settled is None else _settle_frames(path, settled))
        elif kind == "inject":
            room.queue_effect(kind, -1, record.get("id"))
        elif kind == "fixture":  # the control was enforced live: only its violations are scored again
            room.replay_fixture_event(record)
        elif kind == "end":
            break
    return room
