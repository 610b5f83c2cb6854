"""Room checkpoints: a running room written to disk often enough that a crashed server resumes it.

What a checkpoint holds: the world (``physics.checkpoint``: tissue state and topology, instruments and their
grasps, the suture's holds among them), the procedure's progress, the complications, the skill metrics, the
needle and its thread (``Room.suturing``: pose, holder, pass in progress, stitches, particles, slides), the
annotations, the participants (with their hands), who was removed, the room's state and counters, world changes
still queued, and how far the recording had got (a resumed room truncates its recording there and appends: the
recording always re-simulates to the world it belongs to).

When: ``CheckpointPolicy`` asks for one every ``interval`` seconds, at the next tick after a change people
made or were told of (a step's status, an annotation, a complication, a participant, the room's state), and
``min_gap`` seconds after a topology change (cuts come tick after tick).

How, without stalling the tick: the reactor takes the small reactor-side part (participants, annotations;
``reactor_part``) and hands ``room_part`` to the room's own thread, queued between two steps, which copies
the world's arrays and pickles the procedure, complications and skills (a few milliseconds at most). The
``CheckpointWriter`` thread serializes, signs and writes it (temporary file, fsync, atomic rename): the tick
never waits for a disk. Only the newest checkpoint of a room waits to be written (memory is bounded by the
rooms), and a file is bounded by ``MAX_CHECKPOINT_BYTES``.

Files are signed with an HMAC under a server key and read with a restricted unpickler: a checkpoint that
was not written by this server, or was damaged, is refused with a clear error (``CheckpointFileError``).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from physics.checkpoint import CheckpointError, WorldCheckpoint, capture, from_bytes, restore, to_bytes
from rehearsal.lifecycle import RoomState
from rehearsal.room import MAX_ANNOTATIONS, Room

log = logging.getLogger("rehearsal.checkpoints")

CHECKPOINT_DIR = "checkpoints"  # in the data directory
INTERVAL_SECONDS = 5.0  # a room is checkpointed at least this often
MIN_GAP_SECONDS = 0.2  # and, after a change that matters, no more often than this
MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024
MAGIC = b"RCKP1\n"
VERSION = 1
_ALLOWED_MODULES = ("rehearsal.", "physics.", "numpy", "collections", "copyreg", "_codecs", "pathlib")
_ALLOWED_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "slice", "complex", "bytearray", "getattr"}


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be trusted or restored (missing, damaged, not signed by this server)."""


def checkpoint_key(server_key: bytes) -> bytes:
    """The checkpoints' signing key, derived from a server secret (the token key)."""
    return hmac.new(server_key, b"rehearsal room checkpoints", hashlib.sha256).digest()


def checkpoint_path(data_dir: Path, session: str) -> Path:
    return Path(data_dir) / CHECKPOINT_DIR / f"{session}.ckpt"


# --- taking one ------------------------------------------------------------------------------------------


@dataclass
class RoomCapture:
    """One room at one tick boundary, not yet serialized."""

    session: str
    scenario: str
    created_at: float
    taken_at: float
    reactor_part: bytes
    world: WorldCheckpoint | None = None
    room_part: bytes = b""
    recording: dict | None = None
    journal_seq: int = 0  # the action journal's newest entry at capture (rehearsal.journal): in this checkpoint


def reactor_part(room: Room, scenario_name: str, created_at: float, journal_seq: int = 0) -> RoomCapture:
    """On the reactor thread (which changes these): participants, removals, annotations, state, counters and
    the world changes still queued; ``journal_seq``: the action journal's newest entry, which this includes."""
    part = {
        "journal_seq": int(journal_seq),
        "state": room.state.value,
        "participants": room.participants,
        "removed": room.removed,
        "annotations": list(room.annotations),
        "counters": dict(room.counters),
        "effects": room.queued_effects(),
    }
    capture_ = RoomCapture(room.session, scenario_name, created_at, time.time(), pickle.dumps(part, protocol=5))
    capture_.journal_seq = int(journal_seq)
    return capture_


def room_part(room: Room, capture_: RoomCapture) -> RoomCapture:
    """On the room's thread, between two steps: the world's arrays, the procedure, complications and skills,
    and the recording's length so far (flushed, so the file holds at least that much)."""
    capture_.world = capture(room.model, room.physics)
    capture_.room_part = pickle.dumps(
        {
            "procedure": room.procedure,
            "complications": room.complications,
            "skills": room.skills,
            "suturing": room.suturing,  # the needle and its thread (pickled on the room's thread, between steps)
            "frame": room.frame,
            "elapsed": room.elapsed,
        },
        protocol=5,
    )
    recorder = room.recorder
    if recorder is not None:
        recorder.flush()
        capture_.recording = recorder.position()
    return capture_


def encode(capture_: RoomCapture, key: bytes) -> bytes:
    """The signed file contents: MAGIC, HMAC-SHA256 of the body, the body (msgpack)."""
    if capture_.world is None:
        raise ValueError("the room's part of the checkpoint was not taken")
    body = msgpack.packb(
        {
            "version": VERSION,
            "session": capture_.session,
            "scenario": capture_.scenario,
            "created_at": capture_.created_at,
            "taken_at": capture_.taken_at,
            "world": to_bytes(capture_.world),
            "reactor": capture_.reactor_part,
            "room": capture_.room_part,
            "recording": capture_.recording,
        },
        use_bin_type=True,
    )
    return MAGIC + hmac.new(key, body, hashlib.sha256).digest() + body


# --- reading one -----------------------------------------------------------------------------------------


@dataclass
class SavedRoom:
    """A checkpoint read back and verified."""

    session: str
    scenario: str
    created_at: float
    taken_at: float
    world: WorldCheckpoint
    reactor: dict
    room: dict
    recording: dict | None


class _Unpickler(pickle.Unpickler):
    """Only our own classes, numpy's and a few containers (the file is signed too: this is a second wall)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _ALLOWED_BUILTINS:
            return super().find_class(module, name)
        if module.startswith(_ALLOWED_MODULES) and not name.startswith("__"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} may not appear in a checkpoint")


def _unpickle(data: object) -> dict:
    if not isinstance(data, bytes):
        raise CheckpointFileError("checkpoint part is not bytes")
    value = _Unpickler(io.BytesIO(data)).load()
    if not isinstance(value, dict):
        raise CheckpointFileError("checkpoint part is not a map")
    return value


def decode(data: bytes, key: bytes) -> SavedRoom:
    """Verify and parse a checkpoint file's contents (CheckpointFileError if it cannot be trusted)."""
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointFileError(f"checkpoint of {len(data)} bytes is over {MAX_CHECKPOINT_BYTES}")
    head = len(MAGIC) + 32
    if len(data) < head or not data.startswith(MAGIC):
        raise CheckpointFileError("not a room checkpoint")
    body = data[head:]
    if not hmac.compare_digest(data[len(MAGIC) : head], hmac.new(key, body, hashlib.sha256).digest()):
        raise CheckpointFileError("checkpoint signature does not match (damaged, or not this server's)")
    try:
        raw = msgpack.unpackb(body, raw=False, max_bin_len=MAX_CHECKPOINT_BYTES)
        if not isinstance(raw, dict) or raw.get("version") != VERSION:
            raise CheckpointFileError("checkpoint of another version")
        return SavedRoom(
            session=str(raw["session"]),
            scenario=str(raw["scenario"]),
            created_at=float(raw["created_at"]),
            taken_at=float(raw["taken_at"]),
            world=from_bytes(raw["world"], MAX_CHECKPOINT_BYTES),
            reactor=_unpickle(raw["reactor"]),
            room=_unpickle(raw["room"]),
            recording=raw.get("recording"),
        )
    except CheckpointFileError:
        raise
    except (CheckpointError, KeyError, TypeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointFileError(f"checkpoint is malformed: {type(exc).__name__}: {exc}") from None


def read_checkpoint(path: Path, key: bytes) -> SavedRoom:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointFileError(f"{path}: cannot read: {exc.strerror}") from None
    return decode(data, key)


def apply(saved: SavedRoom, room: Room) -> None:
    """Put a checkpoint into a room freshly built from the same scenario (its participants all away until
    they come back)."""
    room.model, room.physics = restore(saved.world)
    r, a = saved.room, saved.reactor
    room.procedure = r["procedure"]
    room.complications = r["complications"]
    room.skills = r["skills"]
    room.restore_suturing(r.get("suturing"))  # a checkpoint from before suturing: the scenario's needle anew
    room.frame = int(r["frame"])
    room.elapsed = float(r["elapsed"])
    room.state = RoomState(a["state"])
    room.participants = dict(a["participants"])
    for participant in room.participants.values():
        participant.connected = False
    room.removed = set(a["removed"])
    room.annotations = deque(a["annotations"], maxlen=MAX_ANNOTATIONS)
    room.counters.clear()
    room.counters.update(a["counters"])
    room.inputs.clear()
    for kind, by, arg in a["effects"]:
        room.queue_effect(kind, by, arg)


# --- when --------------------------------------------------------------------------------------------


def fingerprint(room: Room) -> tuple:
    """What a checkpoint must not wait 5 s for when it changes (cheap: read every tick on the reactor). The
    topology epoch comes first (``CheckpointPolicy`` spaces those out)."""
    steps = room.procedure.steps
    return (
        room.model.epoch,
        room.state.value,
        sum(1 for s in steps if s.status != "pending"),
        len(room.annotations),
        id(room.annotations[-1]) if room.annotations else 0,
        len(room.complications.active),
        len(room.participants),
        len(room.removed),
        sum(len(p.hands) for p in room.participants.values()),
        len(room.queued_effects()),
        _needle_news(room),
    )


def _needle_news(room: Room) -> tuple:
    """A puncture, a stitch, a hand-off: what a resumed suturing room must not lose (the needle's state)."""
    suturing = room.suturing
    if suturing is None:
        return ()
    needle = suturing.needle
    return (needle.punctured, len(needle.passes), needle.holder, len(suturing.thread.slides))


@dataclass
class CheckpointPolicy:
    """One room's schedule: due every ``interval`` s, or ``min_gap`` s after the last when something changed."""

    interval: float = INTERVAL_SECONDS
    min_gap: float = MIN_GAP_SECONDS
    last_at: float = float("-inf")
    last_print: tuple = ()
    in_flight: bool = False

    def due(self, now: float, print_: tuple) -> bool:
        """Every ``interval``; at the next tick after a person's change (a step, an annotation, a complication,
        someone joining: rare, and what people were told must not be lost); ``min_gap`` after a topology change
        (a cut changes the topology tick after tick)."""
        if self.in_flight:
            return False
        since = now - self.last_at
        if since >= self.interval or print_[1:] != self.last_print[1:]:
            return True
        return print_[:1] != self.last_print[:1] and since >= self.min_gap

    def taken(self, now: float, print_: tuple) -> None:
        self.last_at, self.last_print, self.in_flight = now, print_, True


# --- writing -----------------------------------------------------------------------------------------


@dataclass
class WriterStats:
    written: int = 0
    failed: int = 0
    last_bytes: int = 0
    last_seconds: float = 0.0
    deleted: int = 0


@dataclass
class CheckpointWriter:
    """The thread that serializes and writes checkpoints (newest per room; ``delete`` forgets a room's)."""

    data_dir: Path
    key: bytes
    # (capture, bytes, seconds) after each file is on disk; on the writer thread
    on_written: Callable[[RoomCapture, int, float], None] = lambda capture_, nbytes, seconds: None
    stats: WriterStats = field(default_factory=WriterStats)

    def __post_init__(self) -> None:
        self.folder = Path(self.data_dir) / CHECKPOINT_DIR
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pending: dict[str, RoomCapture | None] = {}  # None: delete the room's file
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._work, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, capture_: RoomCapture) -> None:
        """Write this capture (replacing one of the same room not yet written)."""
        with self._cond:
            self._pending[capture_.session] = capture_
            self._cond.notify()

    def delete(self, session: str) -> None:
        """The room ended: its checkpoint goes (after any write of it still queued)."""
        with self._cond:
            self._pending[session] = None
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending, then stop the thread (bounded wait)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending (tests and load runs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._pending and not self._busy:
                    return True
            time.sleep(0.005)
        return False

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if not self._pending and self._stop:
                    return
                session, capture_ = next(iter(self._pending.items()))
                del self._pending[session]
                self._busy = True
            try:
                if capture_ is None:
                    checkpoint_path(self.data_dir, session).unlink(missing_ok=True)
                    self.stats.deleted += 1
                else:
                    self._write(capture_)
            except Exception as exc:  # a full disk must not end the thread: the next checkpoint tries again
                self.stats.failed += 1
                log.error("checkpoint of %s failed: %s: %s", session, type(exc).__name__, exc)
            finally:
                self._busy = False

    def _write(self, capture_: RoomCapture) -> None:
        started = time.perf_counter()
        data = encode(capture_, self.key)
        if len(data) > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"checkpoint of {len(data)} bytes is over {MAX_CHECKPOINT_BYTES}")
        path = checkpoint_path(self.data_dir, capture_.session)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.stats.written += 1
        self.stats.last_bytes = len(data)
        self.stats.last_seconds = time.perf_counter() - started
        self.on_written(capture_, len(data), self.stats.last_seconds)
