"""A finished session's debrief, built by re-simulating its recording once (rehearsal.replay).

Out come, for the debrief page (rehearsal/web/debrief.py serves them):

* a timeline of events with their simulated time: procedure steps, grasps, releases, cuts, burns, tears,
  complications, resets, annotations and the other accepted mentor commands;
* per participant and hand, series sampled at ``SERIES_HZ``: the largest tissue force on the instrument
  since the previous sample (N) and the running skill metrics (``SERIES_METRICS``);
* the stored pass/fail table (the results store's row) beside the replayed one, and whether they agree
  field for field (they must: the recording carries every pose's sample time);
* the 3D replay track: the surface and instruments over time through the project's snapshot codec
  (netcode.sync.snapshot_codec, one client that acks everything), as the live page decodes them. Every
  ``KEYFRAME_SECONDS`` the track holds a keyframe: a *prelude* of ``snap_config`` and a full
  ``snap_topology`` of the current epoch, then a full snapshot, so a seek decodes from the nearest keyframe
  before the time wanted. A decoder already running skips preludes (its state is that of the stream).

Track bytes (``Debrief.track``): per message one flag byte (``STREAM`` or ``PRELUDE``), its length as a
big-endian uint32, then the message as the registry encodes it. ``summary["track"]`` indexes them: for each
frame its time and the index of its snapshot message; the frames that begin at a keyframe.

Bounded: the track stops at ``MAX_TRACK_BYTES``, series and timeline at their counts (``truncated`` says so).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netcode.sync.patches import make_patches
from netcode.sync.snapshot import RigidKind, RigidSet
from netcode.sync.snapshot_codec import SnapshotServer
from netcode.sync.snapshot_messages import snapshot_message
from physics import StepReport
from rehearsal.hands import instrument_holder, instrument_id
from rehearsal.replay import replay
from rehearsal.room import Room
from rehearsal.wire import to_wire_quat

SERIES_HZ = 10
TRACK_HZ = 20
KEYFRAME_SECONDS = 2.0
MAX_TRACK_BYTES = 96 * 1024 * 1024
MAX_SERIES_SAMPLES = 36_000  # an hour at 10 Hz
MAX_EVENTS = 5_000
MAX_JAW = math.pi / 2
OBJECT_BASE = 32768  # snapshot object ids of instruments (as the live room numbers them: from 32768 up)
STREAM, PRELUDE = 0, 1
PHYSICS_EVENTS = ("grasp", "release", "cut", "burn", "tear")
ROOM_EVENTS = ("step_completed", "step_violated", "complication_started", "complication_failed", "world_reset")
ROOM_EVENTS += ("bleeding_stopped",)
SERIES_METRICS = ("path_length_m", "mean_squared_jerk", "peak_force_n", "excessive_force_s", "idle_time_s")
_FRAME = struct.Struct(">BI")


@dataclass(frozen=True)
class Debrief:
    """What the page gets: ``summary`` (JSON-able) and ``track`` (the length-prefixed snapshot messages)."""

    summary: dict[str, Any]
    track: bytes

    @property
    def size(self) -> int:
        """Bytes this debrief holds (for a cache's bound): the track and the JSON summary."""
        return len(self.track) + len(json.dumps(self.summary))


def read_track(data: bytes) -> list[tuple[int, bytes]]:
    """The (flag, message bytes) of a track, in order (ValueError if it is cut short)."""
    out, pos = [], 0
    while pos < len(data):
        if pos + _FRAME.size > len(data):
            raise ValueError("track cut inside a message header")
        flag, length = _FRAME.unpack_from(data, pos)
        pos += _FRAME.size
        if pos + length > len(data):
            raise ValueError("track cut inside a message")
        out.append((flag, data[pos : pos + length]))
        pos += length
    return out


class _Builder:
    """Collects one replay's timeline, series and track, tick by tick (on_step / on_record of replay)."""

    def __init__(self, participants: dict[int, dict[str, Any]]) -> None:
        self.participants = participants
        self.events: list[dict[str, Any]] = []
        self.series_t: list[float] = []
        self.series: dict[str, dict[str, dict[str, list]]] = {}
        self.peak_force: dict[int, float] = {}
        self.truncated: dict[str, int] = {"events": 0, "series": 0, "track": 0}
        self.parts = bytearray()
        self.messages = 0
        self.frames: list[list[float | int]] = []
        self.keyframes: list[int] = []
        self.last_keyframe = -math.inf
        self.objects: dict[int, int] = {}  # physics instrument id -> snapshot object id
        self.sync: SnapshotServer | None = None
        self.model = None
        self.ticks = 0

    # --- timeline ----------------------------------------------------------------------------------------

    def event(
        self, time: float, kind: str, instrument: int | None = None, by: int | None = None, detail: dict | None = None
    ) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.truncated["events"] += 1
            return
        entry: dict[str, Any] = {"t": round(time, 4), "kind": kind}
        if instrument is not None and instrument >= 0:
            participant, hand = instrument_holder(instrument)
            entry.update(participant=participant, hand=hand)
        elif by is not None and by >= 0:
            entry["participant"] = by
        if "participant" in entry:
            entry["name"] = self.participants.get(entry["participant"], {}).get("name", "")
        entry["detail"] = _plain(detail or {})
        self.events.append(entry)

    def on_record(self, room: Room, record: dict[str, Any]) -> None:
        if record["t"] == "command":
            args = record.get("args") if isinstance(record.get("args"), dict) else {}
            by = record.get("by") if isinstance(record.get("by"), int) else None
            action = str(record.get("action"))
            kind = "annotation" if action == "annotate" else "command"
            self.event(room.elapsed, kind, by=by, detail={"action": action, **args})
        elif record["t"] == "fixture":  # a virtual fixture's event (rehearsal/fixtures.py)
            detail = record.get("detail") if isinstance(record.get("detail"), dict) else {}
            iid = record.get("instrument") if isinstance(record.get("instrument"), int) else None
            self.event(room.elapsed, str(record.get("kind")), iid, detail=detail)

    def on_step(self, room: Room, report: StepReport | None) -> None:
        if report is None:
            return
        self.ticks += 1
        now = room.elapsed
        for e in report.events:
            if e.kind in PHYSICS_EVENTS:
                self.event(now, e.kind, e.instrument, detail=e.detail)
        for e in room.take_events():
            if e.kind in ROOM_EVENTS:
                self.event(now, e.kind, e.instrument, e.by, e.detail)
        for iid, force in room.instrument_forces.items():
            self.peak_force[iid] = max(self.peak_force.get(iid, 0.0), force)
        hz = room.scenario.tick_hz
        if self.ticks % max(1, round(hz / SERIES_HZ)) == 0:
            self.sample(room)
        self.track(room, report)

    # --- series ------------------------------------------------------------------------------------------

    def sample(self, room: Room) -> None:
        if len(self.series_t) >= MAX_SERIES_SAMPLES:
            self.truncated["series"] += 1
            return
        n = len(self.series_t)
        self.series_t.append(round(room.elapsed, 4))
        for participant, hand in room.skills.hands():
            metrics = room.skills.metrics(participant, hand).as_dict()
            iid = instrument_id(participant, hand)
            values = {"force_n": self.peak_force.pop(iid, 0.0), **{m: metrics[m] for m in SERIES_METRICS}}
            lanes = self.series.setdefault(str(participant), {}).setdefault(hand, {})
            for name, value in values.items():
                lane = lanes.setdefault(name, [None] * n)
                lane.extend([None] * (n - len(lane)))
                lane.append(round(float(value), 6))
        self.peak_force.clear()

    # --- track -------------------------------------------------------------------------------------------

    def _emit(self, flag: int, message: bytes) -> None:
        self.parts += _FRAME.pack(flag, len(message))
        self.parts += message
        self.messages += 1

    def track(self, room: Room, report: StepReport) -> None:
        if self.truncated["track"]:
            return
        sync = self.sync
        if sync is None or room.model is not self.model:
            ids = room.surface_vertices()
            layout = make_patches(ids, room.physics.x[ids])
            if sync is None:
                self.sync = sync = SnapshotServer(layout, triangles=room.model.surface)
                sync.add_client(0)
            else:
                surface = room.model.surface
                self._emit(
                    STREAM, sync.change_topology(layout, cause="full", added_triangles=surface, triangles=surface)
                )
            self.model = room.model
        elif report.topology:
            self._change_topology(room, report)
        hz = room.scenario.tick_hz
        if self.ticks % max(1, round(hz / TRACK_HZ)) and not report.topology:
            return
        if room.elapsed - self.last_keyframe >= KEYFRAME_SECONDS:
            sync.reset_client(0)
            self.keyframes.append(len(self.frames))
            for message in sync.join_messages():
                self._emit(PRELUDE, message)
            self.last_keyframe = room.elapsed
        sync.begin_frame(room.elapsed, room.physics.x[sync.layout.vertex_ids], self._rigid(room))
        data = sync.encode(0)
        sync.on_ack(0, sync.sequence)
        self.frames.append([round(room.elapsed, 4), self.messages])
        self._emit(STREAM, snapshot_message(data))
        if len(self.parts) > MAX_TRACK_BYTES:
            self.truncated["track"] = 1

    def _change_topology(self, room: Room, report: StepReport) -> None:
        sync = self.sync
        old_ids = sync.layout.vertex_ids
        ids = room.surface_vertices()
        layout = make_patches(ids, room.physics.x[ids])
        removed = [np.asarray(c.removed_triangles, np.int64).reshape(-1, 3) for c in report.topology]
        added = [np.asarray(c.added_triangles, np.int64).reshape(-1, 3) for c in report.topology]
        last = report.topology[-1]
        message = sync.change_topology(
            layout,
            cause=last.cause if last.cause in ("cut", "burn") else "cut",
            instrument=self.objects.get(last.instrument) if last.instrument is not None else None,
            removed_vertices=np.setdiff1d(old_ids, layout.vertex_ids),
            removed_triangles=np.concatenate(removed) if removed else None,
            added_triangles=np.concatenate(added) if added else None,
            triangles=room.model.surface,
        )
        self._emit(STREAM, message)

    def _rigid(self, room: Room) -> RigidSet:
        instruments = room.instruments()
        if not instruments:
            return RigidSet.empty()
        n = len(instruments)
        ids, jaws = np.empty(n, np.int64), np.empty(n)
        positions, orientations = np.empty((n, 3)), np.empty((n, 4))
        for j, (key, inst) in enumerate(instruments.items()):
            ids[j] = self.objects.setdefault(key, OBJECT_BASE + len(self.objects))
            positions[j] = inst.position
            orientations[j] = inst.orientation
            jaws[j] = min(max(float(inst.jaw), 0.0), MAX_JAW) if inst.spec.has_jaw else math.nan
        kinds = np.full(n, int(RigidKind.INSTRUMENT), np.int64)
        return RigidSet(ids, kinds, positions, to_wire_quat(orientations), jaws)


def build_debrief(recording: Path, stored: dict[str, Any]) -> Debrief:
    """Re-simulate ``recording`` once and gather the debrief of the session whose stored result is ``stored``
    (the results store's row). Slow (the whole session's physics): call it off the reactor thread."""
    people = {int(p["participant"]): p for p in stored.get("participants", [])}
    builder = _Builder(people)
    room = replay(recording, on_step=builder.on_step, on_record=builder.on_record)
    replayed = json.loads(json.dumps(room.skills.report()["participants"]))
    stored_skills = {str(pid): p.get("skills") or {} for pid, p in people.items()}
    mismatches = [
        pid
        for pid in sorted(set(replayed) | {k for k, v in stored_skills.items() if v})
        if replayed.get(pid) != stored_skills.get(pid)
    ]
    objects = {}
    for iid, oid in builder.objects.items():
        participant, hand = instrument_holder(iid)
        objects[str(oid)] = {
            "participant": participant,
            "hand": hand,
            "name": people.get(participant, {}).get("name", ""),
        }
    summary = {
        "session": stored.get("session", room.session),
        "scenario": room.scenario.name,
        "simulated_seconds": round(room.elapsed, 4),
        "frames": room.frame,
        "stored": stored,
        "replayed": {"participants": replayed, "steps": room.progress()["steps"]},
        "agrees": not mismatches and room.frame == stored.get("frames", room.frame),
        "mismatches": mismatches,
        "timeline": builder.events,
        "series": {"hz": SERIES_HZ, "t": builder.series_t, "participants": builder.series, "metrics": SERIES_METRICS},
        "track": {
            "frames": builder.frames,
            "keyframes": builder.keyframes,
            "messages": builder.messages,
            "bytes": len(builder.parts),
            "objects": objects,
        },
        "truncated": builder.truncated,
    }
    return Debrief(summary, bytes(builder.parts))


def _plain(value: object, depth: int = 0) -> Any:
    """JSON-able plain values (arrays as lists of floats; anything else as its short text)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if depth < 3 and isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value[:32]]
    if depth < 3 and isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in list(value.items())[:32]}
    return str(value)[:80]
