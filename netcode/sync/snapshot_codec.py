"""Server side of state sync: per-client snapshots, deltas against acknowledged baselines, under a budget.

``SnapshotServer`` is the thin stateful shell the rehearsal server drives once per frame::

    server = SnapshotServer(layout, config, triangles=tris)
    for msg in server.join_messages(): send_reliable(client, msg)      # config + full topology
    server.add_client(cid, budget_bytes=budget_for_rate(1_000_000, 60))
    ...every frame:
    server.begin_frame(time, surface_positions_in_layout_order, rigid_set)
    server.set_focus(cid, instrument_and_gaze_points)
    send_unreliable(cid, snapshot_message(server.encode(cid)))
    (or every client of the frame in one nogil call: server.encode_many(cids), the same bytes)
    ...when the client acks snapshot sequence s:  server.on_ack(cid, s)
    ...on a cut:  for cid: send_reliable(cid, server.change_topology(new_layout, ...))

How it works (details and the byte layout in SNAPSHOT.md):

* ``begin_frame`` quantizes the frame once for everybody, with hysteresis (``quantize.py``): a value
  keeps its previous integer while that is within the error bound, so sub-bound jitter costs nothing.
  Rigid objects and full patch records use this shared quantization.
* Per client and object (rigid object, tissue patch) the server remembers the newest version the
  client **acknowledged** (by snapshot sequence) and the last version it **sent**. A record is a delta
  against the acknowledged version, naming it by its age ``sequence - baseline``; a full record when
  there is none (a new client, a reconnect, a reset). After a cut (``change_topology`` with a cause other
  than ``full``) the acked versions of the surviving vertices are *carried* into the new layout: a new
  patch is sent as a delta against them (naming, per old source patch, the acked version's age) until the
  client acknowledges a version of it in the new epoch. A full record that was sent and not yet acked is
  only resent early when the truth moved ``FULL_RESEND_STEPS`` beyond the bound (not for solver jitter);
  once it is acked, the patch's next delta moves it to the shared (settled) quantization ``q - acked``,
  since a join's full record holds values quantized before the hysteresis settled.
* Optimistic deltas (``anchor_every``, ``optimistic_motion``; SNAPSHOT.md 2.2): between two deltas of a patch
  against its acknowledged version (*anchors*, at most ``anchor_every`` frames apart), its deltas go against the
  version last sent, not yet acknowledged, naming the acknowledged one as the fallback; a client that lost that
  base shows the patch approximately until the anchor. Acks are applied oldest first and an optimistic entry
  counts as held only if its base did (the decoder never applies a base after an entry that needed it); an ack
  that shows a snapshot lost marks its patches ``broken`` (their next send is an anchor). A patch that moved
  more than ``optimistic_motion`` in the frame is always anchored. Optimism is the encoder's choice per client
  (``optimism``): by default only a client whose byte budget binds gets optimistic deltas (one of its last
  ``bound_window`` snapshots left a wanted patch out or spent saved credit, i.e. wanted more than its budget);
  any other client gets deltas against acknowledged versions only (fallback 0), so a loss never makes it show a
  patch approximately: optimism trades shown error after a loss for bytes, worth it only where bytes are short.
* A patch delta is chosen per client (``choose_delta``): among the grid values within the error bound
  of this frame's truth, the one that repeats the previous vertex's delta, so still vertices cost
  nothing and smooth motion becomes runs of equal deltas (the block coder's runs layout). The client's
  versions are therefore its own; the server keeps the rows it sent per snapshot and makes them the
  baselines when acked. A patch is pending while the client's acked version is off the truth by more
  than the bound.
* With ``moving_error`` (``motion_bound.py``; off by default) each patch's bound follows its motion: deltas
  of a patch that moved within its last frames are chosen within ``moving_error`` and it is pending only
  beyond that; once it stopped, its bound is ``max_error`` again and the next delta refines it.
* Motion predictors (``motion_predictor.py``, ``add_predictor``): each frame a drive is fitted per
  predictor and sent in the drive record; everything above then works on ``u = x - P`` (the motion the
  predictors do not explain), and the decoder adds ``P`` back. Without predictors ``u`` is ``x``.
* Priority (``priority.py``): each frame an object's accumulator grows by (steps changed since it was
  last sent) x (interest: nearness to the client's instruments/gaze); an object that was sent but not yet
  acknowledged only competes again after ``resend_after`` frames. Rigid objects (tiny, and what people
  watch) go first, then patches in accumulator order; a record that does not fit the remaining budget
  is skipped (a smaller one may still fit) and keeps accumulating. The chosen patches travel in one
  patch record, in id order.
* The snapshot never exceeds the client's ``budget_bytes`` plus its *credit* (nor one channel message): a
  client added with ``burst_bytes`` > 0 saves what its snapshots leave of their budget, up to that many
  bytes, and a later snapshot may spend it (a token bucket: over any k frames at most k budgets plus
  ``burst_bytes``), so that a patch whose full record is larger than one frame's budget is still sent.
  Without it (the default) every snapshot is within ``budget_bytes``.
"""

from __future__ import annotations

import functools
import operator
import threading
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from netcode.sync.bitcode import PLAN_SIZE
from netcode.sync.encode_kernels import (
    CLIENT_ARRAYS,
    VERSION,
    RigidTracks,
    client_arrays,
    client_row,
    encode_clients,
    snapshot_acked,
)
from netcode.sync.motion_bound import MotionBound
from netcode.sync.motion_predictor import PredictionField, PredictorSet, fine_to_metres
from netcode.sync.patches import DEFAULT_PATCH_SIZE, CarryMap, PatchLayout, carry_map, edit_layout, kept_patches
from netcode.sync.priority import PriorityAccumulator
from netcode.sync.quantize import (
    FRAME_ERRORS,
    FRAME_OK,
    RIGID_ERRORS,
    RIGID_OK,
    TrendTracker,
    max_angular_error,
    quantize_frame,
    rigid_hysteresis,
)
from netcode.sync.snapshot import (
    DEFAULT_CONFIG,
    ENVELOPE_OVERHEAD,
    HEADER_SIZE,
    MAX_SNAPSHOT_BYTES,
    NO_JAW,
    CodecConfig,
    RigidSet,
    drive_record,
    pack_header,
)
from netcode.sync.snapshot_messages import TopologyUpdate, config_message, predictor_message, topology_message

DEFAULT_ANCHOR_EVERY = 3
"""``SnapshotServer(anchor_every=...)``: frames between a patch's deltas against its acked version at most."""
DEFAULT_OPTIMISTIC_MOTION = 3e-3
"""``SnapshotServer(optimistic_motion=...)``: metres a patch may have moved since the last frame for an optimistic
delta (measured on the liver and block traces with ``anchor_every`` 3: 1 mm saves 11% of the liver's bits, 3 mm
17%, and a severed flap in free fall, 58 mm a frame, stays on acked baselines)."""
OPTIMISM_BOUND = "bound"
"""``SnapshotServer(optimism=...)``: optimistic deltas only for a client whose budget binds (the default)."""
OPTIMISM_ALL = "all"
"""``SnapshotServer(optimism=...)``: optimistic deltas for every client (budgeted or not)."""
DEFAULT_BOUND_WINDOW = 30
"""``SnapshotServer(bound_window=...)``: a budgeted client gets optimistic deltas while one of its last this many
snapshots (half a second at 60 Hz) was bound by its budget (measured, SNAPSHOT.md 5: 4 and 8 frames lose most of
the gain at the per-vertex budget, whose binding comes in bursts with unbound frames between)."""
DEFAULT_RESEND_AFTER = 8
"""Frames to wait for an ack before an unchanged, unacknowledged object competes again (~RTT + slack)."""
HISTORY = 128
"""Sent snapshots remembered per client (an ack older than that is ignored)."""
PACKET_OVERHEAD = 9 + 5 + 16 + 9
"""Message-layer packet header + entry header + MAC + netcode prefix/sequence, per packet."""

LATE_ACKS = 4096
"""Acks queued while the lock is held (an encode of a room takes a millisecond or so): more are dropped."""
_NO_CARRY = np.zeros(0, np.int64)
_NO_SLOTS = np.zeros(0, np.int64)
_NO_VERSIONS = np.zeros((0, VERSION), np.int64)
_NO_FOCUS = np.zeros((0, 3))
_NO_RING = np.zeros((1, 0, 3))
BOUND_MARGIN = 1e-9
"""Deltas are chosen within ``(1 - BOUND_MARGIN) * max_error`` of ``u``, so that the decoder's float sum
``grid value + P`` stays within ``max_error`` of ``x`` despite rounding."""


def budget_for_rate(bits_per_second: float, frame_rate: float = 60.0, packets_per_frame: int = 2) -> int:
    """Snapshot bytes per frame for a link rate, net of the envelope and per-packet overheads."""
    raw = int(bits_per_second / 8.0 / frame_rate)
    return max(HEADER_SIZE, raw - ENVELOPE_OVERHEAD - PACKET_OVERHEAD * packets_per_frame)


# ------------------------------------------------------------------------------------------ state


@dataclass(slots=True)
class QuantizedFrame:
    """One server frame, quantized once for all clients (arrays are never modified afterwards)."""

    sequence: int
    time: float
    epoch: int
    surface: np.ndarray  # (N, 3) int32 grid coordinates, layout order (full records)
    positions: np.ndarray  # (N, 3) float64 truth, layout order
    coded: np.ndarray  # (N, 3) float64 truth less the predicted motion (deltas are chosen within the bound of it)
    bounds: np.ndarray  # (P,) float64 each patch's error bound this frame (MotionBound), less BOUND_MARGIN
    motion: np.ndarray  # (P,) float64 each patch's motion since the last frame (worst coordinate; inf: unknown)
    centroids: np.ndarray  # (P, 3) float64 patch centres (for interest)
    rigid_ids: np.ndarray  # (R,) int64
    rigid_kinds: np.ndarray  # (R,) int64
    rigid_pos: np.ndarray  # (R, 3) int32
    rigid_rot: np.ndarray  # (R,) uint64 smallest-three codes
    rigid_jaw: np.ndarray  # (R,) int64, NO_JAW when the object has none
    rigid_points: np.ndarray  # (R, 3) float64
    rigid_slots: np.ndarray  # (R,) int64: each object's slot in the clients' RigidTracks
    rigid_versions: np.ndarray  # (R, VERSION) int64: grid position, rotation code, jaw code
    drives: bytes = b""  # the drive record (empty without predictors)
    headers: list = field(default_factory=list)  # [(4, HEADER_SIZE) uint8 headers for 0..3 records, their lengths]


@dataclass(slots=True)
class _Sent:
    epoch: int
    patches: np.ndarray  # patch ids sent, ascending
    rows: np.ndarray  # the versions the client got of them (their rows, concatenated), int32
    rigid_slots: np.ndarray  # rigid objects sent: their slots (RigidTracks)
    rigid_versions: np.ndarray  # and the versions the client got of them (VERSION rows)
    full: np.ndarray  # per sent patch: sent as a full record
    sizes: np.ndarray  # per sent patch: its vertex count then (rows of a kept patch stay valid after a cut)
    bases: np.ndarray  # per sent patch: the sequence of the optimistic base its delta was coded against (-1: none)


@dataclass
class ClientSync:
    """What the server knows about one client's copy of the scene."""

    n_vertices: int
    n_patches: int
    budget_bytes: int | None = None
    resend_after: int = DEFAULT_RESEND_AFTER
    burst_bytes: int = 0
    """Unused budget a client may save for a later snapshot (0: each snapshot within ``budget_bytes``)."""
    focus: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.budget_bytes is not None and self.budget_bytes < HEADER_SIZE:
            raise ValueError(f"budget_bytes must be at least the {HEADER_SIZE}-byte header")
        if self.burst_bytes < 0:
            raise ValueError("burst_bytes must not be negative")
        self.credit = 0
        """Budget bytes saved by earlier snapshots (at most ``burst_bytes``; kept across resets)."""
        self.newest_ack = 0
        """The newest snapshot sequence the client acknowledged (the sends since are of unknown fate)."""
        self.bound_at = -(1 << 40)
        """The newest snapshot sequence its budget bound (a wanted patch left out, or saved credit spent: it wanted
        more than ``budget_bytes``); ``SnapshotServer.optimism``. Kept across resets."""
        self.reset(self.n_vertices, self.n_patches)

    def reset(self, n_vertices: int, n_patches: int) -> None:
        """Forget every baseline (new client, reconnect, resync, new topology epoch)."""
        self.n_vertices, self.n_patches = n_vertices, n_patches
        self.acked_seq = np.full(n_patches, -1, np.int64)
        self.acked_q = np.zeros((n_vertices, 3), np.int32)
        self.sent_q = np.zeros((n_vertices, 3), np.int32)
        self.ever_sent = np.zeros(n_patches, bool)
        self.last_sent = np.full(n_patches, -(1 << 40), np.int64)
        self.priority = PriorityAccumulator(n_patches)
        self.rigid = RigidTracks()  # per rigid slot (SnapshotServer._rigid_slots): acked and sent versions
        self.history: OrderedDict[int, _Sent] = OrderedDict()
        self.carried = np.zeros(n_patches, bool)  # patches with a baseline carried over a cut
        self.acked_full = np.zeros(n_patches, bool)  # the acked version is a full record's (not settled)
        self.carry_acked = np.zeros(0, np.int64)  # the previous epoch's acked sequence per old patch
        self.chain_start = np.full(n_patches, -1, np.int64)  # the patch's newest send against a held base
        self.broken = np.zeros(n_patches, bool)  # a send of the patch since chain_start is known lost
        self._row: tuple | None = None  # (arrays, addresses, dims) for encode_clients (kernel_row)

    def carry_over(
        self,
        old_rows: np.ndarray,
        old_patch: np.ndarray,
        offsets: np.ndarray,
        kept: np.ndarray | None = None,
        old_offsets: np.ndarray | None = None,
    ) -> None:
        """Enter a new epoch (``reset``) keeping, as carried baselines, the acknowledged versions of the
        vertices that survive: new row i was row ``old_rows[i]`` of old patch ``old_patch[i]`` (-1: new).
        The client keeps the previous epoch's versions for that (SNAPSHOT.md, carried entries). Patches
        ``kept`` by a layout edit (same id, same vertices; rows at ``old_offsets`` before) keep everything:
        acked and sent versions, as plain baselines. The sent history is kept too: acks of the previous
        epochs' snapshots still count for patches kept since (``SnapshotServer.on_ack``)."""
        acked_seq, acked_q, sent_q = self.acked_seq, self.acked_q, self.sent_q
        ever_sent, last_sent, acked_full, history = self.ever_sent, self.last_sent, self.acked_full, self.history
        chain_start, broken = self.chain_start, self.broken
        self.reset(len(old_rows), len(offsets) - 1)
        self.history = history
        valid = old_patch >= 0
        valid[valid] = acked_seq[old_patch[valid]] >= 0
        if valid.any():
            self.carry_acked = acked_seq
            self.carried = np.logical_or.reduceat(valid, offsets[:-1])
            self.acked_q[valid] = acked_q[old_rows[valid]]
            self.sent_q[valid] = self.acked_q[valid]
        if kept is None or old_offsets is None or not len(kept):
            return
        new_rows = np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in kept.tolist()])
        rows = np.concatenate([np.arange(old_offsets[p], old_offsets[p + 1]) for p in kept.tolist()])
        self.acked_q[new_rows] = acked_q[rows]
        self.sent_q[new_rows] = sent_q[rows]
        self.acked_seq[kept] = acked_seq[kept]
        self.ever_sent[kept] = ever_sent[kept]
        self.last_sent[kept] = last_sent[kept]
        self.acked_full[kept] = acked_full[kept]
        self.chain_start[kept] = chain_start[kept]
        self.broken[kept] = broken[kept]
        self.carried[kept] = False

    def kernel_row(self) -> tuple[tuple, np.ndarray, np.ndarray]:
        """(state arrays, their addresses, dims) for ``encode_clients``; the addresses are made again (and
        checked) only when an array was replaced since (a reset, a cut, more rigid slots)."""
        arrays = client_arrays(
            self.rigid, self.acked_q, self.sent_q, self.acked_seq, self.ever_sent, self.last_sent, self.carried,
            self.priority.acc, self.acked_full, self.carry_acked, self.chain_start, self.broken,
        )  # fmt: skip
        row = self._row
        if row is None or not all(map(operator.is_, arrays, row[0])):
            row = self._row = (arrays, *client_row(arrays, self.n_vertices, self.n_patches))
        return row

    @property
    def complete(self) -> bool:
        """True once the client has acknowledged a version of every patch."""
        return bool(np.all(self.acked_seq >= 0))


def _locked(method):
    """Run the method holding the server's ``lock`` (re-entrant)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return locked


class SnapshotServer:
    """Quantizes each frame once and encodes a snapshot per client (see the module docstring)."""

    def __init__(
        self,
        layout: PatchLayout,
        config: CodecConfig = DEFAULT_CONFIG,
        *,
        epoch: int = 1,
        triangles: np.ndarray | None = None,
        layout_edits: bool = True,
        moving_error: float | None = None,
        anchor_every: int = DEFAULT_ANCHOR_EVERY,
        optimistic_motion: float = DEFAULT_OPTIMISTIC_MOTION,
        optimism: str = OPTIMISM_BOUND,
        bound_window: int = DEFAULT_BOUND_WINDOW,
    ) -> None:
        layout.validate()
        if anchor_every < 1:
            raise ValueError("anchor_every must be at least 1")
        if optimism not in (OPTIMISM_BOUND, OPTIMISM_ALL):
            raise ValueError(f"optimism must be {OPTIMISM_BOUND!r} or {OPTIMISM_ALL!r}, not {optimism!r}")
        if bound_window < 1:
            raise ValueError("bound_window must be at least 1")
        self.anchor_every = anchor_every
        """Between two of a patch's deltas against its acked version (*anchors*, at most this many frames apart),
        its deltas go against the version last sent, not yet acknowledged (*optimistic*, SNAPSHOT.md 2.2), so a
        lost snapshot makes a client show a patch approximately for fewer than this many frames (1: always against
        acknowledged versions, as before)."""
        self.optimism = optimism
        """Which clients get optimistic deltas: ``"bound"``, a budgeted client one of whose last ``bound_window``
        snapshots its budget bound (``ClientSync.bound_at``: bytes are short, optimism buys detail); ``"all"``,
        every client (what the first version 4 encoder did). A client without optimism gets deltas against
        acknowledged versions only, so a lost snapshot never makes it show a patch approximately (measured in
        SNAPSHOT.md 5)."""
        self.bound_window = bound_window
        self.optimistic_motion = float(optimistic_motion)
        """Only a patch that moved at most this much since the last frame (metres, its worst coordinate) is sent
        against an optimistic base: a client that lost the base shows it about that much off until the anchor."""
        self.config = config
        self.motion = MotionBound(config.positions.max_error, moving_error)
        """Each patch's error bound per frame: ``moving_error`` (``motion_bound.DEFAULT_MOVING_ERROR`` is the
        one measured) while it moves, ``max_error`` once it settles (``motion_bound.py``; ``None``, the
        default: always ``max_error``)."""
        self.layout_edits = layout_edits
        """Send a cut's layout as an edit (``kept_patches``) when patches kept their vertices (False: always a
        whole layout, for decoders that predate edits, SNAPSHOT.md 1)."""
        self.layout = layout
        self.epoch = epoch
        self.triangles = np.zeros((0, 3), np.int64) if triangles is None else np.asarray(triangles, np.int64)
        self.sequence = 0
        self.frame: QuantizedFrame | None = None
        self.clients: dict[object, ClientSync] = {}
        self._q_prev: np.ndarray | None = None
        self._trend = TrendTracker()
        self._carry: tuple[np.ndarray, np.ndarray] | None = None
        self._carry_map: CarryMap | None = None  # from the previous epoch's layout (None: no carried baselines)
        self._rigid_prev: dict[int, tuple] = {}
        self.lock = threading.RLock()
        """Held by every method that reads or changes the clients' state, so that a room's snapshots can be
        encoded on its own thread while the reactor takes acks, joins and leaves (acks never wait for it)."""
        self._late_acks: deque[tuple[object, int, int]] = deque(maxlen=LATE_ACKS)
        self._rigid_slots: dict[int, int] = {}  # rigid id -> slot in the clients' RigidTracks (ids are < 65,536)
        self._offsets = np.ascontiguousarray(layout.offsets, np.int64)
        self._sizes = layout.sizes
        self._scratch = [np.zeros((layout.vertex_count, 3), np.int64) for _ in range(3)]
        self._plans = np.zeros((layout.patch_count, PLAN_SIZE), np.int64)
        self._out = np.zeros(MAX_SNAPSHOT_BYTES, np.uint8)
        self._rot_tolerance = max_angular_error(config.rotation_bits)
        self._origin = np.asarray(config.positions.origin, np.float64)
        self._predictors = PredictorSet()
        self._field = PredictionField(layout)
        self._truth: np.ndarray | None = None  # the last frame's surface
        self._coded_prev: np.ndarray | None = None  # the last frame's surface less predicted motion
        self._stable_since = np.full(layout.patch_count, epoch, np.int64)  # epoch each patch is unchanged since

    # -------------------------------------------------------------- reliable-channel messages

    @_locked
    def join_messages(self) -> list[bytes]:
        """Reliable messages a joining or reconnecting client needs before snapshots: config, full topology,
        the active motion predictors."""
        update = TopologyUpdate(self.epoch, "full", None, self.layout, added_triangles=self.triangles)
        predictors = [predictor_message(p) for p in self._predictors.predictors()]
        return [config_message(self.config), topology_message(update), *predictors]

    @_locked
    def add_predictor(self, vertex_ids: np.ndarray, matrices: np.ndarray) -> bytes:
        """Start a motion predictor (a grasp response model: mesh vertex ids (K,), matrices (K, 3, 3)
        metres per metre); returns the reliable ``snap_predictor`` message for every client. Its drive is
        fitted from the next frame on, against the surface as it is now (``motion_predictor.PredictorSet``
        retires idle ones; a retired predictor's motion then travels as ordinary deltas)."""
        predictor = self._predictors.add(vertex_ids, matrices, self._field, self._truth, self.sequence)
        return predictor_message(predictor)

    @_locked
    def change_topology(
        self,
        layout: PatchLayout,
        *,
        cause: str = "cut",
        instrument: int | None = None,
        removed_vertices: np.ndarray | None = None,
        removed_triangles: np.ndarray | None = None,
        added_triangles: np.ndarray | None = None,
        triangles: np.ndarray | None = None,
    ) -> bytes:
        """Start a new topology epoch with ``layout``; returns the reliable ``snap_topology`` message.

        With ``cause="full"`` (a reset) every client's baselines become invalid (their next records are
        full); otherwise the clients' acked versions of the surviving vertices (matched by mesh vertex id)
        are carried over as baselines (SNAPSHOT.md, carried baselines). ``triangles`` is the new full
        triangle list (kept for late joiners); the removed/added lists describe the change.
        """
        layout.validate()
        carry = carry_map(self.layout, layout) if cause != "full" else None
        kept = kept_patches(self.layout, layout) if carry is not None and self.layout_edits else None
        old_offsets = self._offsets
        stable = np.full(layout.patch_count, self.epoch + 1, np.int64)
        if kept is not None:
            stable[kept] = self._stable_since[kept]
        self._stable_since = stable
        self.motion.remap(*self.layout.rows_of(layout.vertex_ids))
        self._carry_over(layout)
        self.epoch += 1
        self.layout = layout
        self._offsets = np.ascontiguousarray(layout.offsets, np.int64)
        self._sizes = layout.sizes
        self._scratch = [np.zeros((layout.vertex_count, 3), np.int64) for _ in range(3)]
        self._plans = np.zeros((layout.patch_count, PLAN_SIZE), np.int64)
        self._field = PredictionField(layout)
        self._truth = None
        self._coded_prev = None  # rows change: motion unknown for a frame
        if triangles is not None:
            self.triangles = np.asarray(triangles, np.int64)
        self._carry_map = carry
        for client in self.clients.values():
            if carry is None:
                client.reset(layout.vertex_count, layout.patch_count)
            else:
                old_rows = np.where(carry.old_patch >= 0, old_offsets[carry.old_patch] + carry.old_index, 0)
                client.carry_over(old_rows, carry.old_patch, self._offsets, kept, old_offsets)
        update = TopologyUpdate(
            self.epoch,
            cause,
            instrument,
            layout,
            removed_vertices=removed_vertices,
            removed_triangles=removed_triangles,
            added_triangles=added_triangles,
            kept_patches=kept,
        )
        return topology_message(update)

    def edit_layout(
        self, vertex_ids: np.ndarray, positions: np.ndarray, max_size: int = DEFAULT_PATCH_SIZE
    ) -> PatchLayout:
        """The layout for a cut or burn that leaves the surface vertices ``vertex_ids`` (positions (N, 3)):
        the current one edited (``patches.edit_layout``), so that ``change_topology`` sends only what
        changed and the untouched patches keep their baselines."""
        return edit_layout(self.layout, vertex_ids, positions, max_size)

    def _carry_over(self, layout: PatchLayout) -> None:
        """Keep the quantizer state of vertices that survive a topology change (so their grid values, and
        the jitter they have settled against, carry over); new vertices start afresh."""
        if self._q_prev is None:
            return
        rows, found = self.layout.rows_of(layout.vertex_ids)
        q = np.zeros((layout.vertex_count, 3), np.int32)
        q[found] = self._q_prev[rows[found]]
        self._carry = (found, q)
        self._q_prev = None
        self._trend.remap(rows, found)

    # -------------------------------------------------------------- clients

    @_locked
    def add_client(
        self,
        client_id: object,
        *,
        budget_bytes: int | None = None,
        resend_after: int = DEFAULT_RESEND_AFTER,
        burst_bytes: int = 0,
    ) -> ClientSync:
        """Register a client with no baselines: it receives full records first, then deltas. ``burst_bytes``:
        the unused budget it may save for later snapshots (``ClientSync``; 0: none)."""
        client = ClientSync(
            self.layout.vertex_count, self.layout.patch_count, budget_bytes, resend_after, burst_bytes=burst_bytes
        )
        self.clients[client_id] = client
        return client

    @_locked
    def reset_client(self, client_id: object) -> None:
        """Reconnect or resync request: forget the client's baselines (full records follow)."""
        self.clients[client_id].reset(self.layout.vertex_count, self.layout.patch_count)

    @_locked
    def remove_client(self, client_id: object) -> None:
        self.clients.pop(client_id, None)

    @_locked
    def client_grid(self, client_id: object) -> np.ndarray:
        """Grid coordinates (N, 3) of the newest version of each vertex sent to a client (a copy): what its
        decoder shows once it received everything (patches never sent are zero)."""
        return self.clients[client_id].sent_q.copy()

    @_locked
    def set_focus(self, client_id: object, points: np.ndarray) -> None:
        """The client's instrument tips and gaze point (F, 3): what is near them ranks higher."""
        self.clients[client_id].focus = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 3))

    # -------------------------------------------------------------- frames

    @_locked
    def begin_frame(self, time: float, surface: np.ndarray, rigid: RigidSet | None = None) -> QuantizedFrame:
        """Quantize this frame's truth: surface (N, 3) in layout order, rigid objects; next sequence."""
        surface = np.array(surface, dtype=np.float64)  # a copy: encode() reads it later
        if surface.shape != (self.layout.vertex_count, 3):
            raise ValueError(f"surface must be ({self.layout.vertex_count}, 3) in layout order, got {surface.shape}")
        rigid = RigidSet.empty() if rigid is None else rigid
        rigid.validate()
        drives = self._predictors.fit(self._field, surface, self.config.positions.grid, self.sequence + 1)
        fine = self._field.fine(drives)
        coded = surface if fine is None else surface - fine_to_metres(fine, self.config.positions.grid)
        self._truth = surface
        trend = self._trend
        if (
            self._q_prev is not None
            and self._carry is None
            and trend.level is not None
            and trend.level.shape == coded.shape
        ):
            q, bounds = self._quantize_surface(np.ascontiguousarray(coded))  # the usual frame
        else:
            target = trend.update(coded)
            q = self.config.positions.update(coded, self._q_prev, target)
            if self._carry is not None:
                found, q_old = self._carry
                kept = self.config.positions.update(coded, q_old, target)
                q = np.where(found[:, None], kept, q).astype(np.int32)
                self._carry = None
            bounds = self.motion.update(coded, self._offsets) * (1 - BOUND_MARGIN)
        self._q_prev = q
        previous, self._coded_prev = self._coded_prev, coded
        if previous is None or previous.shape != coded.shape or not self.layout.patch_count:
            motion = np.full(self.layout.patch_count, np.inf)
        else:
            motion = np.maximum.reduceat(np.abs(coded - previous).max(axis=1), self._offsets[:-1])
        if self.layout.patch_count:
            centroids = np.add.reduceat(surface, self._offsets[:-1], axis=0) / self._sizes[:, None]
        else:
            centroids = np.zeros((0, 3))
        r_pos, r_rot, r_jaw = self._quantize_rigid(rigid)
        slots_of = self._rigid_slots
        r_slots = np.array([slots_of.setdefault(oid, len(slots_of)) for oid in rigid.ids.tolist()], np.int64)
        versions = np.empty((len(r_slots), VERSION), np.int64)
        versions[:, :3] = r_pos
        versions[:, 3] = r_rot.astype(np.int64)
        versions[:, 4] = r_jaw
        self.sequence += 1
        self.frame = QuantizedFrame(
            self.sequence,
            float(time),
            self.epoch,
            q,
            surface,
            coded,
            bounds,
            motion,
            centroids,
            np.ascontiguousarray(rigid.ids, np.int64),
            np.ascontiguousarray(rigid.kinds, np.int64),
            r_pos,
            r_rot,
            r_jaw,
            np.ascontiguousarray(rigid.positions, np.float64).reshape(-1, 3),
            r_slots,
            versions,
            drive_record([(p.pid, d) for p, d in drives]) if drives else b"",
        )
        return self.frame

    def _quantize_surface(self, coded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(grid coordinates, bounds) of a frame after the first of its layout, in one kernel (``quantize_frame``:
        the trend, the hysteresis and the motion bounds, the same values as ``TrendTracker``,
        ``PositionQuantizer.update`` and ``MotionBound.update``)."""
        trend, motion, pq = self._trend, self.motion, self.config.positions
        n_p = self.layout.patch_count
        q = np.empty(coded.shape, np.int32)
        bounds = np.empty(n_p)
        if motion.moving_error is None:
            ring, at, moving = _NO_RING, 0, 0.0
        else:
            (ring, at), moving = motion.take_slot(coded.shape), motion.moving_error
        status = quantize_frame(
            coded, trend.level, trend.trend, trend.alpha, trend.beta, trend.lead, np.empty_like(coded),
            np.ascontiguousarray(self._q_prev), self._origin, pq.grid, pq.max_error, q,
            ring, at, self._offsets, moving, BOUND_MARGIN, bounds,
        )  # fmt: skip
        if status != FRAME_OK:
            raise ValueError(FRAME_ERRORS[status])
        return q, bounds

    def _quantize_rigid(self, rigid: RigidSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hysteresis quantization per rigid id (position, orientation, jaw) against last frame's values."""
        cfg = self.config
        ids = rigid.ids.tolist()
        n = len(ids)
        prev = [self._rigid_prev.get(oid) for oid in ids]
        has_prev = np.array([p is not None for p in prev], bool)
        blank = ((0, 0, 0), 0, NO_JAW)
        prev_pos = np.array([(p or blank)[0] for p in prev], np.int32).reshape(n, 3)
        prev_rot = np.array([(p or blank)[1] for p in prev], np.uint64)
        prev_jaw = np.array([(p or blank)[2] for p in prev], np.int64)
        pos, rot, jaw = np.empty((n, 3), np.int32), np.empty(n, np.uint64), np.empty(n, np.int64)
        status = rigid_hysteresis(
            np.asarray(rigid.positions, np.float64).reshape(n, 3),
            np.asarray(rigid.orientations, np.float64).reshape(n, 4),
            np.asarray(rigid.jaws, np.float64),
            prev_pos, prev_rot, prev_jaw, has_prev, self._origin, cfg.positions.grid, cfg.positions.max_error,
            cfg.rotation_bits, self._rot_tolerance, cfg.jaw.lo, cfg.jaw.hi, cfg.jaw.bits, cfg.jaw.max_error, NO_JAW,
            pos, rot, jaw,
        )  # fmt: skip
        if status != RIGID_OK:
            raise ValueError(RIGID_ERRORS[status])
        self._rigid_prev = {
            oid: (p, r, w)
            for oid, p, r, w in zip(ids, map(tuple, pos.tolist()), rot.tolist(), jaw.tolist(), strict=True)
        }
        return pos, rot, jaw

    # -------------------------------------------------------------- encoding

    @_locked
    def encode(self, client_id: object) -> bytes:
        """This frame's snapshot for one client (never longer than its budget)."""
        return self.encode_many((client_id,))[0]

    @_locked
    def encode_many(self, client_ids) -> list[bytes]:
        """This frame's snapshots for these clients (in that order; each never longer than its budget), all in
        one compiled call that releases the GIL (``encode_clients``): the same bytes as ``encode`` one by one."""
        f = self.frame
        if f is None:
            raise RuntimeError("begin_frame first")
        self._apply_late_acks()
        clients = [self.clients[key] for key in client_ids]
        n = len(clients)
        if not n:
            return []
        seq = f.sequence
        headers = f.headers
        if not headers:  # once per frame: the header for 0 to 3 records
            headers.append(np.zeros((4, HEADER_SIZE), np.uint8))
            headers.append(np.zeros(4, np.int64))
            header = np.frombuffer(pack_header(seq, f.time, f.epoch, 0), np.uint8)  # the count is its last byte
            headers[0][:, : len(header)] = header
            headers[0][:, len(header) - 1] = np.arange(4)
            headers[1][:] = len(header)
        slots = len(self._rigid_slots)
        limits, resend, rows, dims, focus, bases, focus_offsets = [], [], [], [], [], [], [0]
        anchors = [self._anchor_every(c, seq) for c in clients]
        keep = []  # the arrays the kernel reads, alive until it returned
        total = 0
        for c in clients:  # plain lists here, one numpy array each after: a few clients, numpy's per-call cost
            c.rigid.ensure(slots)
            budget = c.budget_bytes
            limit = MAX_SNAPSHOT_BYTES if budget is None else min(budget + c.credit, MAX_SNAPSHOT_BYTES)
            limits.append(limit)
            bases.append(total)
            total += limit
            resend.append(c.resend_after)
            arrays, addresses, dim = c.kernel_row()
            keep.append(arrays)
            rows.append(addresses)
            dims.append(dim)
            focus.append(c.focus)
            focus_offsets.append(focus_offsets[-1] + len(c.focus))
        if len(self._out) < total:
            self._out = np.zeros(max(total, 2 * len(self._out)), np.uint8)
        out = self._out
        taken = np.zeros((n, len(f.rigid_ids)), np.int64)  # zeros: the whole of it is gathered below
        ends, n_rigid, skipped = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        carry = self._carry_map
        d, dense, sparse = self._scratch
        sent_idx, sent_rows, sent_full, sent_bases, idx_off, rows_off = encode_clients(
            out,
            np.array(bases, np.int64),
            np.array(limits, np.int64),
            np.array(resend, np.int64),
            np.concatenate(rows).reshape(n, CLIENT_ARRAYS),
            np.concatenate(dims).reshape(n, 2),
            np.concatenate(focus) if focus_offsets[-1] else _NO_FOCUS,
            np.array(focus_offsets, np.int64),
            headers[0],
            headers[1],
            np.frombuffer(f.drives, np.uint8),
            seq,
            f.rigid_ids,
            f.rigid_slots,
            f.rigid_kinds,
            f.rigid_versions,
            f.rigid_points,
            self.config.rotation_bits,
            self.config.jaw.bits,
            taken,
            f.surface,
            f.coded,
            f.centroids,
            self._origin,
            self.config.positions.grid,
            f.bounds,
            self._offsets,
            carry is not None,
            _NO_CARRY if carry is None else carry.sources,
            _NO_CARRY if carry is None else carry.offsets,
            d,
            dense,
            sparse,
            self._plans,
            ends,
            n_rigid,
            skipped,
            np.array(anchors, np.int64),
            f.motion,
            self.optimistic_motion,
        )
        del keep
        snapshots = []
        sent_sizes = self._sizes[sent_idx]
        idx_off, rows_off = idx_off.tolist(), rows_off.tolist()
        epoch, no_slots, no_versions = f.epoch, _NO_SLOTS, _NO_VERSIONS
        if n_rigid.any():  # the rigid objects each client got: one gather for all (rows cut per client below)
            rigid_slots_all, rigid_versions_all = f.rigid_slots[taken], f.rigid_versions[taken]
        for i, (c, start, end, rigid_n, skip) in enumerate(
            zip(clients, bases, ends.tolist(), n_rigid.tolist(), skipped.tolist(), strict=True)
        ):
            snapshots.append(out[start:end].tobytes())
            if rigid_n:
                rigid_slots, rigid_versions = rigid_slots_all[i, :rigid_n], rigid_versions_all[i, :rigid_n]
            else:
                rigid_slots, rigid_versions = no_slots, no_versions
            a, b = idx_off[i], idx_off[i + 1]
            rows = sent_rows[rows_off[i] : rows_off[i + 1]]
            history = c.history
            history[seq] = _Sent(
                epoch,
                sent_idx[a:b],
                rows,
                rigid_slots,
                rigid_versions,
                sent_full[a:b],
                sent_sizes[a:b],
                sent_bases[a:b],
            )
            while len(history) > HISTORY:
                history.popitem(last=False)
            size = end - start
            if c.budget_bytes is not None and (skip or size > c.budget_bytes):
                c.bound_at = seq  # the budget bound: a wanted patch left out, or saved credit spent
            if c.budget_bytes is not None:
                c.credit = max(0, min(c.burst_bytes, c.credit + c.budget_bytes - size))
            stats = c.stats
            stats["snapshots"] += 1
            stats["bytes"] += size
            stats["skipped_patches"] += skip
        return snapshots

    def _anchor_every(self, c: ClientSync, seq: int) -> int:
        """The client's anchor interval this frame: ``anchor_every`` if it gets optimistic deltas (``optimism``),
        else 1 (every delta against its acknowledged version)."""
        if self.optimism == OPTIMISM_ALL:
            return self.anchor_every
        if c.budget_bytes is None or seq - c.bound_at > self.bound_window:
            return 1
        return self.anchor_every

    def on_ack_fields(self, client_id: object, newest: int, bits: int) -> None:
        """Apply a ``snap_ack`` message: ``newest`` and every ``newest - 1 - i`` whose bit i is set. While another
        thread encodes (``lock`` held) the ack waits in a queue for the next holder instead of blocking."""
        if not self.lock.acquire(blocking=False):
            self._late_acks.append((client_id, newest, bits))
            return
        try:
            self._apply_late_acks()
            self._ack_fields(client_id, newest, bits)
        finally:
            self.lock.release()

    def on_ack(self, client_id: object, sequence: int) -> None:
        """The client applied snapshot ``sequence``: its versions become baselines (if newer); queued like
        ``on_ack_fields`` while another thread holds ``lock``."""
        self.on_ack_fields(client_id, sequence, 0)

    def _apply_late_acks(self) -> None:
        """The acks that arrived while another thread held ``lock`` (the caller holds it)."""
        late = self._late_acks
        while late:
            self._ack_fields(*late.popleft())

    def _ack_fields(self, client_id: object, newest: int, bits: int) -> None:
        """Apply the acked snapshots oldest first (an optimistic delta counts only once its base did), then
        mark the patches of the snapshots this ack shows lost (``_mark_lost``)."""
        applied = [newest - 1 - i for i in range(31, -1, -1) if bits >> i & 1]
        applied.append(newest)
        for sequence in applied:
            self._ack(client_id, sequence)
        c = self.clients.get(client_id)
        if c is None or newest <= c.newest_ack or newest > self.sequence:  # (a snapshot never sent: ignored)
            return
        self._mark_lost(c, c.newest_ack, newest, set(applied))
        c.newest_ack = newest

    def _mark_lost(self, c: ClientSync, after: int, newest: int, applied: set[int]) -> None:
        """Snapshots ``after < s <= newest`` that the client's ack says it did not apply (lost, or late: a
        decoder never applies a snapshot after one that needed it as a base): every patch they carried whose
        current chain of optimistic sends includes them is ``broken`` (its next delta goes against the acked
        version, which the client holds)."""
        for s in range(max(after + 1, newest - HISTORY), newest):
            if s in applied:
                continue
            record = c.history.get(s)
            if record is None:
                continue
            if record.epoch != self.epoch:
                record = self._kept_part(record)
                if record is None:
                    continue
            p = record.patches
            c.broken[p[c.chain_start[p] <= s]] = True

    def _ack(self, client_id: object, sequence: int) -> None:
        c = self.clients.get(client_id)
        if c is None:
            return
        record = c.history.pop(sequence, None)
        if record is None:
            return
        if record.epoch != self.epoch:  # an earlier epoch's snapshot: it counts for the patches kept since
            record = self._kept_part(record)
            if record is None:
                return
        t = c.rigid
        snapshot_acked(
            sequence, record.patches, record.rows, record.full, record.bases, self._offsets, c.acked_seq, c.acked_q,
            c.carried,
            c.acked_full, record.rigid_slots, record.rigid_versions, t.exists, t.has_acked, t.acked_seq, t.acked,
        )  # fmt: skip

    def _kept_part(self, record: _Sent) -> _Sent | None:
        """The part of an earlier epoch's sent record about patches kept unchanged since (None: nothing)."""
        p = record.patches
        ok = (p < self.layout.patch_count) & (record.epoch < self.epoch)
        ok[ok] = self._stable_since[p[ok]] <= record.epoch
        if not ok.any():
            return None
        take = np.repeat(ok, record.sizes)
        return _Sent(
            self.epoch,
            p[ok],
            record.rows[take],
            _NO_SLOTS,
            _NO_VERSIONS,
            record.full[ok],
            record.sizes[ok],
            record.bases[ok],
        )
