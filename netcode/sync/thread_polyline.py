"""The suture thread as a quantized polyline: per-client deltas, its encoder and its decoder (SNAPSHOT.md 6).

The thread is a polyline of n points (n may change, 0 .. ``MAX_POINTS``) that travels in its own unreliable
``snap_thread`` message beside the snapshot of the same frame, not inside it: the snapshot encoder stays as it
is, and a lost thread message costs nothing but the thread's own resend. It uses the snapshot's quantization
(``CodecConfig.positions``: the same grid and error bound as the surface), the same kind of baselines (a delta
against the newest version the client acknowledged, ``thread_ack``; over an in-order stream every version
written is one) and the same priority scheme (an accumulator of the unseen change in grid steps times the
client's interest) under the same per-client byte budget: ``ThreadStream.encode`` is given the room the client's
budget leaves and the highest accumulator of its pending patches, and the caller takes the bytes it used off
the snapshot's budget for that frame.

Wire format of ``snap_thread.data`` (little-endian; varint = unsigned LEB128, at most 5 bytes)::

    u8      version    THREAD_VERSION (1)
    varint  sequence   the server frame (the snapshot numbering, < 2^32)
    f64     time       server clock of the frame (seconds)
    varint  age        0: full; a >= 1: delta against the version of snapshot frame (sequence - a)
    varint  count      n, the number of points (0 .. MAX_POINTS)
    full:   n >= 1: 3 varints zigzag(grid x, y, z of point 0), then if n >= 2 a bitcode block (bitcode.py,
            standalone: 14-bit header, zero padding to a byte) of the n - 1 segment vectors q[i] - q[i-1]
    delta:  n >= 1: a bitcode block of the n values q[i] - b[min(i, m - 1)] (b: the baseline's m points;
            m = 0: b = 0)
    nothing after the block

The block codes each value's difference from the previous one, so a full record costs the thread's curvature
(segment vectors change little) and a delta its motion's variation along the thread.

Several threads (a tied stitch's piece cut off the thread stays in the tissue): each has its own id (the message's
``thread`` field, absent for 0), its own ``ThreadStream`` on the server and ``ThreadDecoder`` on the client
(``ThreadSet``: at most ``MAX_THREADS``); a thread that is gone is sent as a thread of 0 points.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from netcode.sync.bitcode import BLOCK_ERRORS, BlockCoder, block_read
from netcode.sync.encode_kernels import FULL_WEIGHT, choose_delta
from netcode.sync.priority import PriorityAccumulator, interest
from netcode.sync.quantize import INT32_LIMIT
from netcode.sync.snapshot import (
    ACK_BITS,
    DEFAULT_CONFIG,
    CodecConfig,
    SnapshotError,
    ack_fields,
    read_varint,
    unzigzag,
    write_varint,
    zigzag,
)
from netcode.sync.snapshot_codec import BOUND_MARGIN, DEFAULT_RESEND_AFTER

THREAD_VERSION = 1
MAX_POINTS = 4096
"""Most points a thread message may carry (a 200-segment thread has 201); a decoder refuses more."""
MAX_THREADS = 16
"""Threads a room may have at once (the live one on the needle, id 0, and the tied pieces cut off it, 1, 2, ...):
message ``thread`` ids are 0 .. MAX_THREADS - 1, a client keeps at most this many (``ThreadSet``)."""
MAX_THREAD_BYTES = 64 * 1024
"""Largest ``snap_thread.data`` (a full 4,096-point thread at a 3 mm spacing is about 14 KiB)."""
THREAD_ENVELOPE = 32
"""Bytes the msgpack envelope ``{"v": 1, "t": "snap_thread", "data": <bin>}`` adds (at most, <= 64 KiB)."""
HISTORY = 64
"""Versions the server remembers per client (sent, not yet acknowledged)."""
MAX_VERSIONS = 32
"""Versions a decoder keeps (by sequence)."""
MAX_DEFER = 4
"""Frames the thread waits for higher-ranked patches at most: then it goes first (if it fits), so a patch that
never fits the budget (its accumulator grows without bound) cannot starve it."""
_TIME = struct.Struct("<d")


class ThreadError(SnapshotError):
    """A thread message is malformed or cannot be applied (the text says why); the decoder is unchanged."""


class ThreadBaselineMissingError(ThreadError):
    """A delta names a version the decoder does not hold: ask for a resync (``snap_resync``)."""


# ------------------------------------------------------------------------------------------ wire pieces


def pack_thread(
    sequence: int, time: float, age: int, q: np.ndarray, base: np.ndarray | None, coder: BlockCoder
) -> bytes:
    """One ``snap_thread`` payload: ``q`` (n, 3) grid values, full (``base`` None, ``age`` 0) or a delta against
    ``base`` (m, 3) of ``age`` frames ago."""
    q = np.asarray(q, np.int64).reshape(-1, 3)
    n = len(q)
    if n > MAX_POINTS:
        raise ValueError(f"a thread of {n} points (at most {MAX_POINTS})")
    out = bytearray((THREAD_VERSION,))
    write_varint(out, sequence & 0xFFFFFFFF)
    out += _TIME.pack(float(time))
    write_varint(out, age)
    write_varint(out, n)
    if n == 0:
        return bytes(out)
    if base is None:
        for v in q[0].tolist():
            write_varint(out, zigzag(int(v)))
        if n >= 2:
            out += coder.encode(np.diff(q, axis=0))
    else:
        out += coder.encode(q - extended_baseline(base, n))
    return bytes(out)


def extended_baseline(base: np.ndarray, n: int) -> np.ndarray:
    """The baseline of each of ``n`` points: ``base[min(i, m - 1)]`` (zeros when the baseline is empty)."""
    base = np.asarray(base, np.int64).reshape(-1, 3)
    m = len(base)
    if m == 0:
        return np.zeros((n, 3), np.int64)
    if m >= n:
        return base[:n]
    return np.concatenate([base, np.repeat(base[-1:], n - m, axis=0)])


@dataclass(frozen=True, slots=True)
class ThreadHeader:
    sequence: int
    time: float
    age: int
    count: int
    end: int  # byte position after the header


def read_thread_header(data: bytes) -> ThreadHeader:
    """The header of a ``snap_thread`` payload; ThreadError when short, foreign or out of range."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ThreadError("thread data must be bytes")
    data = bytes(data)
    if not data:
        raise ThreadError("empty thread message")
    if data[0] != THREAD_VERSION:
        raise ThreadError(f"thread message version {data[0]} (this decoder reads {THREAD_VERSION})")
    if len(data) > MAX_THREAD_BYTES:
        raise ThreadError(f"thread message of {len(data)} bytes (at most {MAX_THREAD_BYTES})")
    end = len(data)
    try:
        seq, pos = read_varint(data, 1, end, "thread sequence")
        if pos + _TIME.size > end:
            raise ThreadError("thread message shorter than its header")
        (time,) = _TIME.unpack_from(data, pos)
        age, pos = read_varint(data, pos + _TIME.size, end, "thread age")
        count, pos = read_varint(data, pos, end, "thread point count")
    except ThreadError:
        raise
    except SnapshotError as exc:
        raise ThreadError(str(exc)) from None
    if seq > 0xFFFFFFFF or seq < 1:
        raise ThreadError(f"thread sequence {seq} out of range")
    if not math.isfinite(time):
        raise ThreadError("thread time is not finite")
    if age > seq:
        raise ThreadError(f"thread age {age} beyond its sequence {seq}")
    if count > MAX_POINTS:
        raise ThreadError(f"thread of {count} points (at most {MAX_POINTS})")
    return ThreadHeader(seq, time, age, count, pos)


def unpack_thread(data: bytes, header: ThreadHeader, base: np.ndarray | None) -> np.ndarray:
    """The grid values (n, 3) int64 of a payload whose header was read, against ``base`` for a delta."""
    data = bytes(data)
    n, pos, end = header.count, header.end, len(data)
    buf = np.frombuffer(data, np.uint8)
    q = np.zeros((n, 3), np.int64)
    if n and header.age == 0:
        first = []
        try:
            for _axis in range(3):
                u, pos = read_varint(data, pos, end, "thread first point")
                first.append(unzigzag(u))
        except SnapshotError as exc:
            raise ThreadError(str(exc)) from None
        q[0] = first
        if n >= 2:
            seg = np.zeros((n - 1, 3), np.int64)
            pos = _block(buf, pos, end, seg)
            q[1:] = seg
            q = np.cumsum(q, axis=0)
    elif n:
        if base is None:
            raise ThreadBaselineMissingError("thread delta without a baseline")
        pos = _block(buf, pos, end, q)
        q += extended_baseline(base, n)
    if pos != end:
        raise ThreadError(f"{end - pos} bytes after the thread's points")
    if n and np.max(np.abs(q)) > INT32_LIMIT:
        raise ThreadError("thread grid coordinate beyond int32")
    return q


def _block(buf: np.ndarray, pos: int, end: int, d: np.ndarray) -> int:
    got = block_read(buf, pos, end, d)
    if got < 0:
        raise ThreadError(f"thread block: {BLOCK_ERRORS.get(got, 'malformed')}")
    return got


# ------------------------------------------------------------------------------------------ server


@dataclass
class ThreadClient:
    """What the server knows of one client's copy of the thread."""

    resend_after: int = DEFAULT_RESEND_AFTER
    acked_seq: int = -1
    acked: np.ndarray | None = None  # grid values (m, 3) int32 the client acknowledged
    sent: np.ndarray | None = None  # the version last sent
    last_sent: int = -(1 << 40)
    history: OrderedDict = field(default_factory=OrderedDict)  # sequence -> version sent
    priority: PriorityAccumulator = field(default_factory=lambda: PriorityAccumulator(1))
    waited: int = 0  # frames in a row the thread deferred to a patch
    stats: dict = field(default_factory=lambda: {"messages": 0, "bytes": 0, "full": 0, "deferred": 0})


class ThreadStream:
    """One thread's state sync for many clients (see the module doc).

    Per frame: ``begin_frame(sequence, time, points)``, then per client ``encode(key, room, rival)`` (bytes to
    send as ``snap_thread``, or None), and ``on_ack`` / ``on_ack_fields`` when the client acknowledges."""

    def __init__(self, config: CodecConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self.clients: dict[object, ThreadClient] = {}
        self.sequence = 0
        self.time = 0.0
        self.points = np.zeros((0, 3))  # this frame's truth, metres
        self.q = np.zeros((0, 3), np.int32)  # its shared quantization (hysteresis against last frame's)
        self._coder = BlockCoder(MAX_POINTS)
        self._frame: dict = {}
        self._origin = np.asarray(config.positions.origin, np.float64)

    def add_client(self, key: object, resend_after: int = DEFAULT_RESEND_AFTER) -> ThreadClient:
        """A client with no baseline: its first message is full."""
        client = self.clients[key] = ThreadClient(resend_after)
        return client

    def reset_client(self, key: object) -> None:
        """Forget the client's baselines (a resync, a reconnect): full next."""
        old = self.clients.get(key)
        self.add_client(key, old.resend_after if old else DEFAULT_RESEND_AFTER)

    def remove_client(self, key: object) -> None:
        self.clients.pop(key, None)

    def begin_frame(self, sequence: int, time: float, points: np.ndarray) -> None:
        """This frame's thread (n, 3) metres: quantized once (with hysteresis, as the surface) for everyone."""
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        if len(pts) > MAX_POINTS:
            raise ValueError(f"a thread of {len(pts)} points (at most {MAX_POINTS})")
        if not np.all(np.isfinite(pts)):
            raise ValueError("thread points must be finite")
        prev = self.q if len(self.q) == len(pts) else None
        self.q = self.config.positions.update(pts, prev)
        self.points = pts
        self.sequence, self.time = int(sequence), float(time)
        self._frame: dict = {}  # this frame's messages: the full one, deltas by baseline (clients share them)

    def _offness(self, version: np.ndarray | None) -> float:
        """Grid steps the version is off the truth beyond the bound (inf: no version or another count)."""
        if version is None or len(version) != len(self.points):
            return math.inf
        if not len(version):
            return 0.0
        pq = self.config.positions
        err = np.max(np.abs(self.points - (self._origin + version * pq.grid)))
        return float(err) / pq.grid if err > pq.max_error * (1 - BOUND_MARGIN) else 0.0

    def pending(self, key: object) -> bool:
        """Whether the client's acknowledged version (or the one last sent) is off the truth."""
        c = self.clients[key]
        return self._offness(c.acked) > 0 or (c.sent is not None and self._offness(c.sent) > 0)

    def encode(
        self, key: object, room: int | None = None, rival: float = 0.0, focus: np.ndarray | None = None
    ) -> bytes | None:
        """This frame's ``snap_thread`` data for a client, or None (nothing pending, not its turn, or too big).

        The accumulator grows by the unseen change (steps; ``FULL_WEIGHT`` without a baseline) times the client's
        interest in the thread (its point nearest ``focus``), like a patch's; the thread is sent when that is at
        least ``rival`` (the highest accumulator among the client's pending patches), or it has waited ``MAX_DEFER``
        frames, and its message fits ``room`` bytes (envelope included); otherwise it waits, accumulating."""
        c = self.clients[key]
        seq = self.sequence
        off_acked = self._offness(c.acked)
        off_sent = self._offness(c.sent) if c.sent is not None else math.inf
        acc = c.priority.acc
        if off_acked == 0 and (c.sent is None or off_sent == 0):
            acc[0] = 0.0
            return None
        moved = c.sent is not None and off_sent > 0
        if not (c.sent is None or moved or seq - c.last_sent >= c.resend_after):
            return None  # sent, unchanged since, not acked yet: wait for the ack
        steps = FULL_WEIGHT if c.acked is None else (off_sent if moved and math.isfinite(off_sent) else off_acked)
        near = 1.0
        if focus is not None and len(focus) and len(self.points):
            near = float(np.max(interest(self.points, focus)))
        acc[0] += max(1.0, min(steps, FULL_WEIGHT)) * near
        if acc[0] < rival and c.waited < MAX_DEFER:
            c.waited += 1
            c.stats["deferred"] += 1
            return None
        data, version = self._message(c)
        if room is not None and len(data) + THREAD_ENVELOPE > room:
            c.stats["deferred"] += 1
            return None
        acc[0] = 0.0
        c.waited = 0
        c.sent, c.last_sent = version, seq
        c.history[seq] = version
        while len(c.history) > HISTORY:
            c.history.popitem(last=False)
        c.stats["messages"] += 1
        c.stats["bytes"] += len(data)
        return data

    def _message(self, c: ThreadClient) -> tuple[bytes, np.ndarray]:
        """The smaller of a full record (the shared quantization) and a delta against the acked version (chosen,
        as the surface's, among the grid values within the bound, in as few runs as possible). Each is made once
        per frame and baseline: clients that acked the same version get the same bytes."""
        seq, q, frame = self.sequence, self.q, self._frame
        full = frame.get("full")
        if full is None:
            full = frame["full"] = pack_thread(seq, self.time, 0, q, None, self._coder)
        if c.acked is None:
            c.stats["full"] += 1
            return full, q
        key = (c.acked_seq, c.acked.tobytes())
        made = frame.get(key)
        if made is None:
            n = len(q)
            pq = self.config.positions
            base = extended_baseline(c.acked, n)
            d = np.zeros((n, 3), np.int64)
            if n:
                choose_delta(self.points, q, base, self._origin, pq.grid, pq.max_error * (1 - BOUND_MARGIN), 0, n, d)
            version = (base + d).astype(np.int32)
            delta = pack_thread(seq, self.time, seq - c.acked_seq, version, c.acked, self._coder)
            made = frame[key] = (full, q) if len(full) <= len(delta) else (delta, version)
        if made[0] is full:
            c.stats["full"] += 1
        return made

    def on_ack(self, key: object, sequence: int) -> None:
        """The client applied the thread message of frame ``sequence``: its version becomes the baseline."""
        c = self.clients.get(key)
        if c is None:
            return
        version = c.history.pop(sequence, None)
        if version is not None and sequence > c.acked_seq:
            c.acked_seq, c.acked = sequence, version
            for old in [s for s in c.history if s < sequence]:
                del c.history[old]  # the baseline only moves forward

    def on_ack_fields(self, key: object, newest: int, bits: int) -> None:
        """A ``thread_ack``: ``newest`` and every ``newest - 1 - i`` whose bit i is set."""
        for i in range(ACK_BITS):
            if bits >> i & 1:
                self.on_ack(key, newest - 1 - i)
        self.on_ack(key, newest)


# ------------------------------------------------------------------------------------------ client


class ThreadDecoder:
    """A client's copy of the thread: applies ``snap_thread`` payloads, keeps versions for deltas, acks them."""

    def __init__(self, config: CodecConfig | None = None, max_versions: int = MAX_VERSIONS) -> None:
        self.config = config
        self.max_versions = max_versions
        self.sequence: int | None = None  # newest applied
        self.time = math.nan
        self.rejected = 0
        self.missing_baselines = 0
        self._versions: OrderedDict[int, np.ndarray] = OrderedDict()
        self._applied: list[int] = []
        self._q = np.zeros((0, 3), np.int64)

    def reset(self) -> None:
        """Forget every version (the server was asked to resync)."""
        self._versions.clear()
        self._applied.clear()
        self.sequence = None
        self._q = np.zeros((0, 3), np.int64)

    @property
    def grid(self) -> np.ndarray:
        """The newest thread's grid values (n, 3) (a copy)."""
        return self._q.copy()

    def points(self) -> np.ndarray:
        """The newest thread (n, 3) in metres (empty before the first message or without a config)."""
        if self.config is None:
            return np.zeros((0, 3))
        return self.config.positions.dequantize(self._q)

    def apply(self, data: bytes) -> bool:
        """Apply one payload: True if it is the newest thread now, False for a stale (older) one; ThreadError
        (``ThreadBaselineMissingError`` for an unknown baseline) when it cannot be applied, state unchanged."""
        try:
            header = read_thread_header(data)
            seq = header.sequence
            if seq in self._versions:
                return False  # a duplicate
            base = None
            if header.age:
                base = self._versions.get(seq - header.age)
                if base is None:
                    self.missing_baselines += 1
                    raise ThreadBaselineMissingError(
                        f"thread delta against frame {seq - header.age}, which is not held"
                    )
            q = unpack_thread(data, header, base)
        except ThreadError:
            self.rejected += 1
            raise
        self._versions[seq] = q
        if header.age:  # the server's baseline only moves forward: older versions are no longer needed
            for old in [s for s in self._versions if s < seq - header.age]:
                del self._versions[old]
        while len(self._versions) > self.max_versions:
            self._versions.popitem(last=False)
        self._applied.append(seq)
        del self._applied[: -(ACK_BITS + 1)]
        if self.sequence is not None and seq < self.sequence:
            return False
        self.sequence, self.time, self._q = seq, header.time, q
        return True

    def ack_fields(self) -> dict[str, int]:
        """``thread_ack`` fields: the newest applied frame and 32 bits for the ones before it."""
        if not self._applied:
            raise ThreadError("no thread message applied yet")
        return ack_fields(self._applied)


def thread_id(value: object) -> int:
    """A message's ``thread`` field as an id (absent or None: 0); ThreadError unless 0 .. MAX_THREADS - 1."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_THREADS:
        raise ThreadError(f"thread id {value!r} (0 .. {MAX_THREADS - 1})")
    return value


class ThreadSet:
    """A client's threads by id, a ``ThreadDecoder`` each (made on the first message of an id; at most
    MAX_THREADS, since ids are bounded): the live thread on the needle (0) and the tied pieces cut off it."""

    def __init__(self, config: CodecConfig | None = None) -> None:
        self.config = config
        self.decoders: dict[int, ThreadDecoder] = {}

    def decoder(self, thread: object = 0) -> ThreadDecoder:
        """The decoder of thread ``thread`` (made now if new); ThreadError for an id out of range."""
        key = thread_id(thread)
        dec = self.decoders.get(key)
        if dec is None:
            dec = self.decoders[key] = ThreadDecoder(self.config)
        return dec

    def apply(self, thread: object, data: bytes) -> bool:
        """One ``snap_thread`` payload into its thread's decoder (see ``ThreadDecoder.apply``)."""
        return self.decoder(thread).apply(data)

    def reset(self) -> None:
        """Forget every thread (a new suture stream: ``snap_suture``)."""
        self.decoders.clear()

    def points(self) -> dict[int, np.ndarray]:
        """Every thread's newest points (n, 3) m by id, the empty ones left out."""
        out = {k: d.points() for k, d in sorted(self.decoders.items())}
        return {k: p for k, p in out.items() if len(p)}
