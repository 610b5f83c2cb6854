"""Client side of state sync: validate and apply snapshots and topology epochs (SNAPSHOT.md).

``SnapshotDecoder`` keeps, per object, the versions it received (by snapshot sequence) so that a record
that is a delta against *any* version the server saw acknowledged can be rebuilt, and the newest version
for display. Every snapshot is parsed completely into fresh arrays first; the decoder's state changes
only when the whole snapshot was valid. Anything wrong (truncation, bad counts, ids or indices out of
range, a baseline it does not have, trailing bytes...) raises ``SnapshotError`` with the reason.

Epochs: a snapshot is only applied to the topology epoch it was encoded for. A snapshot of a newer epoch
than the decoder's topology is *held* (up to ``max_held``) until the ``snap_topology`` message arrives on
the reliable channel, then applied; one of an older epoch is dropped. Both raise ``EpochMismatchError``.
Likewise a snapshot whose drive record names a motion predictor the decoder has not received
(``snap_predictor``) is held until it arrives (``MissingPredictorError``). Patch positions are the decoded
grid values plus what the snapshot's predictors add (``motion_predictor.py``).

After applying snapshot ``s`` the client acknowledges it (``ack_fields()`` gives the ``snap_ack``
message fields); when ``missing_baselines`` grows the client should send ``snap_resync``.

Optimistic entries (SNAPSHOT.md 2.2): a patch delta may be coded against a version the server sent but had
not seen acknowledged, naming the acknowledged one as its fallback. The fallback must be
held (else the snapshot is rejected, as any missing baseline); a missing optimistic base only makes that
entry *approximate*: its delta is added to what the patch shows (the newest version, or the last
approximation), which is off the truth by the change the lost snapshot carried, and is shown but never stored
as a version (``approximate``) until a delta against a held version applies; the snapshot that was that base
is never applied afterwards (so that an ack says exactly which versions the client holds).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import numba
import numpy as np

from netcode.sync.bitcode import BLOCK_ERRORS, RUNS, block_get, get_bits, get_eg
from netcode.sync.motion_predictor import MAX_DRIVE, MAX_PREDICTORS, PredictionField, Predictor, fine_to_metres
from netcode.sync.patches import CarryMap, PatchLayout, carry_map
from netcode.sync.quantize import INT32_LIMIT, decode_rotations
from netcode.sync.snapshot import (
    ACK_BITS,
    MAX_OBJECT_ID,
    NO_JAW,
    RECORD_DRIVE,
    RECORD_PATCH,
    RECORD_RIGID,
    BitReader,
    CodecConfig,
    RigidKind,
    SnapshotError,
    ack_fields,
    read_drive_record,
    read_header,
    read_varint,
    rotation_parts,
    unzigzag,
)
from netcode.sync.snapshot_messages import TopologyUpdate, decode_message

_CARRIED_BASE = -1
"""Baseline sequence recorded for a carried entry: not full, and it prunes no older version."""
DEFAULT_MAX_VERSIONS = 32
DEFAULT_MAX_HELD = 8


PATCH_ERRORS = {
    -10: "patch id out of range for the epoch's layout",
    -11: "the first patch entry has no age to repeat",
    -12: "baseline age reaches before sequence 0",
    -13: "patch record padding bits are not zero",
    -14: "carried baseline, but this epoch has none (it was not entered by a cut the decoder saw)",
    -15: "fallback age reaches before sequence 0",
}
CARRIED = 1
"""Age code of a patch entry whose baseline is carried over from the previous epoch (SNAPSHOT.md 2.2)."""


@numba.njit(cache=True, nogil=True)
def parse_patch_entries(
    buf, pos, end, count, seq, offsets, ids, ages, fallbacks, starts, rows, has_carry, carry_off, carry_ages,
    carry_starts,
):  # fmt: skip
    """Parse ``count`` patch entries (SNAPSHOT.md 2.2) from byte ``pos`` of ``buf[:end]``: entry e's id, age
    code and fallback (0 unless the code is a delta's) into ``ids[e]``/``ages[e]``/``fallbacks[e]``, its block
    (the deltas or full coordinates) into ``rows[starts[e]:starts[e + 1]]``; a carried entry's source ages
    (``carry_off[id + 1] - carry_off[id]`` of them, allowed only if ``has_carry``) into ``carry_ages`` from
    ``carry_starts[e]``. Returns (status, position after the record, failing entry): status 0, or a negative code
    of ``BLOCK_ERRORS`` / ``PATCH_ERRORS``."""
    bit = pos * 8
    end_bit = end * 8
    n_p = len(offsets) - 1
    header = np.zeros(4, np.int64)
    header[0] = RUNS  # block headers are relative to the previous one, the first to [runs, 0, 0, 0]
    oid = -1
    age = -1
    fallback = 0
    starts[0] = 0
    cpos = 0
    for e in range(count):
        gap, bit = get_eg(buf, bit, end_bit, 0)
        if gap < 0:
            return gap, 0, e
        if gap >= n_p - oid - 1:
            return -10, 0, e
        oid += gap + 1
        same, bit = get_bits(buf, bit, end_bit, 1)
        if same < 0:
            return -1, 0, e
        if same:
            if e == 0:
                return -11, 0, e
        else:
            age, bit = get_eg(buf, bit, end_bit, 0)
            if age < 0:
                return age, 0, e
            if age - 1 > seq:
                return -12, 0, e
            fallback = 0
            if age >= 2:
                fallback, bit = get_eg(buf, bit, end_bit, 0)
                if fallback < 0:
                    return fallback, 0, e
                if age - 1 + fallback > seq:
                    return -15, 0, e
        carry_starts[e] = cpos
        if age == 1:
            if not has_carry:
                return -14, 0, e
            for _ in range(carry_off[oid], carry_off[oid + 1]):
                a, bit = get_eg(buf, bit, end_bit, 0)
                if a < 0:
                    return a, 0, e
                if a > seq:
                    return -12, 0, e
                carry_ages[cpos] = a
                cpos += 1
        size = offsets[oid + 1] - offsets[oid]
        s = starts[e]
        bit = block_get(buf, bit, end_bit, rows[s : s + size], header)
        if bit < 0:
            return bit, 0, e
        ids[e] = oid
        ages[e] = age
        fallbacks[e] = fallback
        starts[e + 1] = s + size
    if bit & 7 and buf[bit >> 3] >> (bit & 7):
        return -13, 0, count
    return 0, (bit + 7) // 8, count


class EpochMismatchError(SnapshotError):
    """The snapshot's topology epoch is not the decoder's; ``held`` says whether it was kept for later."""

    def __init__(self, message: str, held: bool) -> None:
        super().__init__(message)
        self.held = held


class LateBaseError(SnapshotError):
    """A late snapshot that an applied later one needed as an optimistic base: never applied (nor acked)."""

    held = False


class MissingPredictorError(SnapshotError):
    """The snapshot needs a motion predictor whose ``snap_predictor`` message has not arrived: held."""

    held = True


@dataclass(frozen=True, slots=True)
class DecodedObject:
    """One object of a snapshot, ready for an interpolation buffer.

    Patches: ``vertex_ids`` (n,) and ``positions`` (n, 3) float64 metres. Rigid objects: ``positions``
    (3,), ``orientation`` (4,) quaternion (x, y, z, w), ``jaw`` radians or None.
    """

    id: int
    kind: str
    sequence: int
    server_time: float
    full: bool
    positions: np.ndarray
    vertex_ids: np.ndarray | None = None
    orientation: np.ndarray | None = None
    jaw: float | None = None


@dataclass(frozen=True, slots=True)
class DecodedSnapshot:
    sequence: int
    server_time: float
    epoch: int
    objects: list[DecodedObject]


@dataclass(slots=True)
class _RigidVersion:
    kind: int
    pos: np.ndarray  # int64 (3,)
    rot: int
    jaw: int


class SnapshotDecoder:
    """Applies ``snap_config``, ``snap_topology`` and ``snapshot`` messages to a client's copy of the scene."""

    def __init__(
        self,
        config: CodecConfig | None = None,
        *,
        max_versions: int = DEFAULT_MAX_VERSIONS,
        max_held: int = DEFAULT_MAX_HELD,
    ) -> None:
        self.config = config
        self.max_versions = max_versions
        self.max_held = max_held
        self.epoch: int | None = None
        self.layout: PatchLayout | None = None
        self.topology: TopologyUpdate | None = None
        self.missing_baselines = 0
        self.rejected = 0
        self.skipped_entries = 0
        """Patch entries whose optimistic base was not held (shown approximately, not stored)."""
        self.late_dropped = 0
        """Late snapshots dropped because an applied later one had needed them as a base (``LateBaseError``)."""
        self.approximate: dict[int, int] = {}
        """Patches shown approximately (a lost optimistic base): id -> sequence of the first such entry, until
        an entry against a held version applies."""
        self._needed: set[int] = set()  # sequences a skipped entry named as its base: never applied later
        self._held: list[tuple[int, int, bytes]] = []  # (epoch, sequence, data)
        self._applied: list[int] = []  # recent applied sequences, newest last
        self._rigid_versions: dict[int, dict[int, _RigidVersion]] = {}
        self._rigid_latest: dict[int, int] = {}
        self._carry: tuple[CarryMap, list[dict[int, np.ndarray]]] | None = None  # previous epoch, after a cut
        self._predictors: dict[int, Predictor] = {}
        self._field: PredictionField | None = None
        self._fine_latest: np.ndarray | None = None  # predicted offsets (FINE units) of the newest snapshot
        self._reset_surface()

    # -------------------------------------------------------------- state views

    def _reset_surface(self) -> None:
        n = 0 if self.layout is None else self.layout.vertex_count
        p = 0 if self.layout is None else self.layout.patch_count
        self._patch_versions: list[dict[int, np.ndarray]] = [{} for _ in range(p)]
        self._patch_latest = np.full(p, -1, np.int64)
        self._surface_q = np.zeros((n, 3), np.int64)

    def surface(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions (N, 3) float64 in layout order, received (N,) bool) of the newest versions."""
        if self.layout is None or self.config is None:
            return np.zeros((0, 3)), np.zeros(0, bool)
        received = np.repeat(self._patch_latest >= 0, self.layout.sizes)
        positions = self.config.positions.dequantize(self._surface_q)
        if self._fine_latest is not None:
            positions += fine_to_metres(self._fine_latest, self.config.positions.grid)
        return positions, received

    def surface_grid(self) -> np.ndarray:
        """The surface's decoded grid values (N, 3), before predicted motion is added (a copy; exact
        comparisons with ``SnapshotServer.client_grid`` in tests)."""
        return self._surface_q.copy()

    def rigid(self) -> dict[int, DecodedObject]:
        """Newest decoded version of every rigid object, by id."""
        out = {}
        for oid, seq in self._rigid_latest.items():
            out[oid] = self._rigid_object(oid, self._rigid_versions[oid][seq], seq, float("nan"), False)
        return out

    @property
    def predictors(self) -> list[int]:
        """Ids of the motion predictors held (``snap_predictor``)."""
        return sorted(self._predictors)

    @property
    def newest_sequence(self) -> int | None:
        return self._applied[-1] if self._applied else None

    def ack_fields(self) -> dict[str, int]:
        """``snap_ack`` fields: the newest applied sequence and 32 bits for the ones before it."""
        if not self._applied:
            raise SnapshotError("no snapshot applied yet")
        return ack_fields(self._applied)

    # -------------------------------------------------------------- messages

    def on_message(self, data: bytes) -> list[DecodedSnapshot]:
        """Dispatch one state-sync channel message; returns the snapshots it made applicable."""
        kind, value = decode_message(data)
        if kind == "snap_config":
            self.config = value
            return []
        if kind == "snap_topology":
            return self.apply_topology(value)
        if kind == "snap_predictor":
            return self.add_predictor(value)
        if kind == "snapshot":
            return [self.decode(value)]
        raise SnapshotError(f"message {kind!r} is not for the snapshot decoder")

    def apply_topology(self, update: TopologyUpdate) -> list[DecodedSnapshot]:
        """Enter ``update.epoch``: new patch layout, every old baseline dropped except those of the patches a
        layout edit keeps (``kept_patches``); applies held snapshots."""
        if self.epoch is not None and update.epoch < self.epoch:
            raise SnapshotError(f"topology epoch {update.epoch} is older than the current epoch {self.epoch}")
        if self.epoch is not None and update.epoch == self.epoch and update.cause != "full":
            raise SnapshotError(f"topology epoch {update.epoch} was already applied")
        carry = (
            self.layout is not None
            and self.epoch is not None
            and update.epoch == self.epoch + 1
            and update.cause != "full"
        )
        if update.kept_patches is not None and not carry:
            raise SnapshotError(f"topology epoch {update.epoch}: a layout edit needs the previous epoch's layout")
        old_layout, old_versions, old_latest, old_q = (
            self.layout,
            self._patch_versions,
            self._patch_latest,
            self._surface_q,
        )
        layout = update.resolve_layout(old_layout)
        self._carry = (carry_map(old_layout, layout), old_versions) if carry else None
        self.epoch = update.epoch
        self.layout = layout
        self.topology = update if update.kept_patches is None else dataclasses.replace(update, layout=layout)
        self._reset_surface()
        approximate, self.approximate = self.approximate, {}
        if update.kept_patches is not None:  # kept patches keep their versions (SNAPSHOT.md 1, layout edits)
            for p in update.kept_patches.tolist():
                if p in approximate:
                    self.approximate[p] = approximate[p]
                self._patch_versions[p] = dict(old_versions[p])
                self._patch_latest[p] = old_latest[p]
                self._surface_q[layout.patch(p)] = old_q[old_layout.patch(p)]
        self._rigid_versions = {oid: {s: v[s]} for oid, v in self._rigid_versions.items() for s in [max(v)]}
        self._field = PredictionField(layout)
        self._fine_latest = None
        return self._retry_held()

    def add_predictor(self, predictor: Predictor) -> list[DecodedSnapshot]:
        """Keep a motion predictor (the newest 2 x MAX_PREDICTORS); applies snapshots held for it."""
        self._predictors[predictor.pid] = predictor
        while len(self._predictors) > 2 * MAX_PREDICTORS:
            old = min(self._predictors)
            del self._predictors[old]
            if self._field is not None:
                self._field.forget(old)
        return self._retry_held()

    def _retry_held(self) -> list[DecodedSnapshot]:
        """Decode the held snapshots of the current epoch (those still missing something stay held)."""
        held, self._held = sorted(self._held), []
        out = []
        for epoch, _, data in held:
            if epoch == self.epoch:
                with contextlib.suppress(SnapshotError):
                    out.append(self.decode(data))
            elif epoch > self.epoch:
                self._held.append((epoch, _, data))
        return out

    # -------------------------------------------------------------- snapshots

    def decode(self, data: bytes) -> DecodedSnapshot:
        """Validate and apply one snapshot; SnapshotError (state untouched) if anything is wrong."""
        try:
            return self._decode(bytes(data))
        except (EpochMismatchError, MissingPredictorError, LateBaseError):
            raise
        except SnapshotError:
            self.rejected += 1
            raise

    def _decode(self, data: bytes) -> DecodedSnapshot:
        if self.config is None:
            raise SnapshotError("no snap_config received yet")
        seq, server_time, epoch, count, start = read_header(data)
        if self.layout is None or epoch != self.epoch:
            if self.epoch is None or epoch > self.epoch:
                self._hold(epoch, seq, data)
                raise EpochMismatchError(
                    f"snapshot {seq} is for topology epoch {epoch}, decoder has {self.epoch}: held until it arrives",
                    held=True,
                )
            raise EpochMismatchError(
                f"snapshot {seq} is for topology epoch {epoch}, older than the decoder's {self.epoch}: dropped",
                held=False,
            )
        if seq in self._applied:
            raise SnapshotError(f"snapshot {seq} was already applied")
        if seq in self._needed:
            self.late_dropped += 1
            raise LateBaseError(f"snapshot {seq} arrived after a snapshot that needed it as a base: dropped")
        patches, rigid, drives, skipped = self._parse_records(data, start, seq, count)
        missing = sorted(set(drives) - set(self._predictors))
        if missing:
            self._hold(epoch, seq, data)
            raise MissingPredictorError(f"snapshot {seq} needs motion predictors {missing}: held until they arrive")
        fine = None
        if drives:
            assert self._field is not None
            fine = self._field.fine((self._predictors[pid], drive) for pid, drive in drives.items())
        shown = patches if not skipped else {**patches, **{p: v for p, v in skipped.items() if v[1] is not None}}
        objects = self._objects(seq, server_time, shown, rigid, fine)
        # a snapshot with no patches and no drives (a starved budget) leaves the predicted motion as it was
        self._commit(seq, patches, rigid, fine if drives or patches else self._fine_latest, skipped)
        return DecodedSnapshot(seq, server_time, epoch, objects)

    def _hold(self, epoch: int, seq: int, data: bytes) -> None:
        """Keep a snapshot that waits for a reliable message (the newest ``max_held``)."""
        self._held.append((epoch, seq, data))
        del self._held[: -self.max_held]

    def _parse_records(self, data: bytes, pos: int, seq: int, count: int) -> tuple[dict, dict, dict, dict]:
        """Every record decoded into fresh arrays: ({patch: (fallback baseline, q)}, {rigid id: (baseline,
        version)}, {predictor id: drive}, {patch whose optimistic base is missing: (that base, the approximate
        grid values to show, None if the patch shows a newer version)})."""
        assert self.layout is not None and self.config is not None
        end = len(data)
        buf = np.frombuffer(data, np.uint8)
        patches: dict[int, tuple[int | None, np.ndarray]] = {}
        rigid: dict[int, tuple[int | None, _RigidVersion]] = {}
        drives: dict[int, np.ndarray] = {}
        skipped: dict[int, tuple[int, np.ndarray | None]] = {}
        for r in range(count):
            if pos >= end:
                raise SnapshotError(f"snapshot ends after {r} of {count} records")
            tag = data[pos]
            pos += 1
            if tag == RECORD_DRIVE:
                if r != 0:
                    raise SnapshotError(f"record {r}: the drive record must come first")
                drives, pos = read_drive_record(data, pos, end, MAX_DRIVE)
                continue
            if tag == RECORD_PATCH:
                pos = self._parse_patches(buf, pos, end, seq, r, patches, skipped)
                continue
            if tag == RECORD_RIGID:
                pos = self._parse_rigid(data, pos, end, seq, r, rigid)
                continue
            raise SnapshotError(f"record {r}: unknown record tag 0x{tag:02x}")
        if pos != end:
            raise SnapshotError(f"{end - pos} bytes after the last of {count} records")
        return patches, rigid, drives, skipped

    def _parse_rigid(self, data: bytes, pos: int, end: int, seq: int, r: int, rigid: dict) -> int:
        """One rigid record (after its tag, SNAPSHOT.md 2.1) into ``rigid``; returns the position after it."""
        assert self.config is not None
        rbits = self.config.rotation_bits
        rot_width = 2 + 3 * rbits
        comp_max = (1 << rbits) - 1
        jaw_bits = self.config.jaw.bits
        jaw_max = (1 << jaw_bits) - 1
        count, pos = read_varint(data, pos, end, f"record {r} rigid count")
        if count == 0:
            raise SnapshotError(f"record {r}: rigid record with no objects")
        bits = BitReader(data, pos, end, f"record {r} (rigid)")
        oid = age = -1
        for e in range(count):
            where = f"record {r}, rigid entry {e}"
            oid += bits.eg(0) + 1
            if oid > MAX_OBJECT_ID:
                raise SnapshotError(f"{where}: rigid id {oid} above {MAX_OBJECT_ID}")
            if oid in rigid:
                raise SnapshotError(f"{where}: rigid object {oid} appears twice")
            if bits.bits(1):
                if e == 0:
                    raise SnapshotError(f"{where}: the first rigid entry has no age to repeat")
            else:
                age = bits.eg(0)
                if age > seq:
                    raise SnapshotError(f"{where}: baseline age {age} reaches before sequence 0")
            base_seq = seq - age if age else None
            if base_seq is None:
                kind = bits.bits(3)
                if kind not in RigidKind._value2member_map_:
                    raise SnapshotError(f"{where}: unknown rigid kind {kind}")
                base = _RigidVersion(kind, np.zeros(3, np.int64), 0, NO_JAW)
            else:
                base = self._rigid_versions.get(oid, {}).get(base_seq)
                if base is None:
                    self.missing_baselines += 1
                    raise SnapshotError(f"{where}: rigid object {oid} baseline {base_seq} is not held")
            p = base.pos.copy()
            has_pos = bits.bits(1)
            if has_pos:
                k = bits.bits(4)
                for a in range(3):
                    p[a] += unzigzag(bits.eg(k))
                if np.any(np.abs(p) > INT32_LIMIT):
                    raise SnapshotError(f"{where}: rigid {oid} position out of the int32 range")
            rot = base.rot
            has_rot = bits.bits(1)
            if has_rot:
                if not bits.bits(1):
                    rot = bits.bits(rot_width)
                elif base_seq is None:
                    raise SnapshotError(f"{where}: orientation change in a full entry")
                else:
                    k = bits.bits(4)
                    parts = rotation_parts(base.rot, rbits)
                    comps = [c + unzigzag(bits.eg(k)) for c in parts[1:]]
                    if min(comps) < 0 or max(comps) > comp_max:
                        raise SnapshotError(f"{where}: orientation component out of 0..{comp_max}")
                    rot = parts[0] << (3 * rbits) | comps[0] << (2 * rbits) | comps[1] << rbits | comps[2]
            if base_seq is None and not (has_pos and has_rot):
                raise SnapshotError(f"{where}: full rigid entry {oid} without position or orientation")
            jaw = base.jaw
            if bits.bits(1):
                if not bits.bits(1):
                    jaw = bits.bits(jaw_bits)
                elif base.jaw == NO_JAW:
                    raise SnapshotError(f"{where}: jaw change without a baseline jaw")
                else:
                    jaw = base.jaw + unzigzag(bits.eg(bits.bits(4)))
                    if not 0 <= jaw <= jaw_max:
                        raise SnapshotError(f"{where}: jaw code {jaw} out of 0..{jaw_max}")
            rigid[oid] = (base_seq, _RigidVersion(base.kind, p, rot, jaw))
        return bits.finish()

    def _parse_patches(
        self, buf: np.ndarray, pos: int, end: int, seq: int, r: int, patches: dict, skipped: dict
    ) -> int:
        """One patch record (after its tag) into ``patches`` (and the optimistic entries whose base is not held
        into ``skipped``, with their approximation); returns the position after it."""
        assert self.layout is not None
        if pos + 2 > end:
            raise SnapshotError(f"record {r}: truncated patch count")
        count = int(buf[pos]) | int(buf[pos + 1]) << 8
        if count == 0:
            raise SnapshotError(f"record {r}: patch record with no patches")
        n = self.layout.vertex_count
        ids = np.empty(count, np.int64)
        ages = np.empty(count, np.int64)
        fallbacks = np.empty(count, np.int64)
        starts = np.empty(count + 1, np.int64)
        rows = np.empty((n, 3), np.int64)
        carry = self._carry
        carry_off = np.zeros(self.layout.patch_count + 1, np.int64) if carry is None else carry[0].offsets
        carry_ages = np.empty(max(1, int(carry_off[-1])), np.int64)
        carry_starts = np.empty(count, np.int64)
        status, at, entry = parse_patch_entries(
            buf,
            pos + 2,
            end,
            count,
            seq,
            self.layout.offsets,
            ids,
            ages,
            fallbacks,
            starts,
            rows,
            carry is not None,
            carry_off,
            carry_ages,
            carry_starts,
        )
        if status < 0:
            where = f"record {r}, patch entry {entry} of {count}"
            raise SnapshotError(f"{where}: {PATCH_ERRORS.get(status) or BLOCK_ERRORS[status]}")
        rows = rows[: starts[count]].copy()  # one array per snapshot; each patch gets a view
        for e in range(count):
            oid = int(ids[e])
            if oid in patches or oid in skipped:
                raise SnapshotError(f"record {r}: patch {oid} appears twice")
            d = rows[starts[e] : starts[e + 1]]
            code = int(ages[e])
            if code == CARRIED:
                assert carry is not None
                d += self._carried_baseline(oid, seq, carry_ages[carry_starts[e] :], r)
                patches[oid] = (_CARRIED_BASE, d)
                continue
            base_seq = seq - (code - 1) if code else None
            if base_seq is not None:
                versions = self._patch_versions[oid]
                fallback = base_seq - int(fallbacks[e])
                if fallback not in versions:
                    self.missing_baselines += 1
                    raise SnapshotError(f"record {r}: patch {oid} baseline {fallback} is not held")
                base = versions.get(base_seq)
                if base is None:  # an optimistic base that was lost: shown on what the patch shows, not stored
                    newer = seq <= self._patch_latest[oid]
                    skipped[oid] = (base_seq, None if newer else d + self._surface_q[self.layout.patch(oid)])
                    continue
                d += base
                base_seq = fallback  # what the server may still use: older versions can go
            patches[oid] = (base_seq, d)
        if len(rows) and np.abs(rows).max() > INT32_LIMIT:
            raise SnapshotError(f"record {r}: patch grid coordinates out of the int32 range")
        return at

    def _carried_baseline(self, pid: int, seq: int, ages: np.ndarray, r: int) -> np.ndarray:
        """The baseline of a carried entry of new patch ``pid``: each vertex's value in the previous epoch's
        version (of age ``ages[j]``, 0 = none: zeros) of its source patch ``j``."""
        assert self._carry is not None and self.layout is not None
        cmap, old_versions = self._carry
        sl = self.layout.patch(pid)
        old_patch, old_index = cmap.old_patch[sl], cmap.old_index[sl]
        base = np.zeros((sl.stop - sl.start, 3), np.int64)
        lo = int(cmap.offsets[pid])
        for j, k in enumerate(cmap.sources[lo : int(cmap.offsets[pid + 1])].tolist()):
            age = int(ages[j])
            if age == 0:
                continue
            version = old_versions[k].get(seq - age)
            if version is None:
                self.missing_baselines += 1
                raise SnapshotError(f"record {r}: patch {pid} carried baseline {seq - age} of old patch {k} not held")
            mask = old_patch == k
            base[mask] = version[old_index[mask]]
        return base

    def _objects(
        self, seq: int, server_time: float, patches: dict, rigid: dict, fine: np.ndarray | None
    ) -> list[DecodedObject]:
        """The decoded objects, dequantized in one pass over all rigid objects and one over all patch rows
        (the same arithmetic per value as one object at a time)."""
        assert self.layout is not None and self.config is not None
        out = []
        cfg = self.config
        if rigid:
            versions = [v for _, v in rigid.values()]
            pos = cfg.positions.dequantize(np.array([v.pos for v in versions], np.int64).reshape(-1, 3))
            rots = decode_rotations(np.array([v.rot for v in versions], np.uint64), cfg.rotation_bits)
            for j, (oid, (base_seq, v)) in enumerate(rigid.items()):
                jaw = None if v.jaw == NO_JAW else float(cfg.jaw.dequantize(v.jaw))
                kind = RigidKind(v.kind).name.lower()
                out.append(
                    DecodedObject(oid, kind, seq, server_time, base_seq is None, pos[j], orientation=rots[j], jaw=jaw)
                )
        if patches:
            offsets = self.layout.offsets
            pids = list(patches)
            shown = cfg.positions.dequantize(np.concatenate([patches[pid][1] for pid in pids]))
            if fine is not None:
                starts = offsets[pids]
                sizes = offsets[np.asarray(pids) + 1] - starts
                rows = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
                shown += fine_to_metres(fine[rows], cfg.positions.grid)
            at = 0
            for pid in pids:
                lo, hi = int(offsets[pid]), int(offsets[pid + 1])
                base_seq = patches[pid][0]
                out.append(
                    DecodedObject(
                        pid,
                        "patch",
                        seq,
                        server_time,
                        base_seq is None,
                        shown[at : at + hi - lo],
                        vertex_ids=self.layout.vertex_ids[lo:hi],
                    )
                )
                at += hi - lo
        return out

    def _rigid_object(self, oid: int, v: _RigidVersion, seq: int, t: float, full: bool) -> DecodedObject:
        assert self.config is not None
        return DecodedObject(
            oid,
            RigidKind(v.kind).name.lower(),
            seq,
            t,
            full,
            self.config.positions.dequantize(v.pos),
            orientation=decode_rotations(np.array([v.rot], np.uint64), self.config.rotation_bits)[0],
            jaw=None if v.jaw == NO_JAW else float(self.config.jaw.dequantize(v.jaw)),
        )

    def _commit(self, seq: int, patches: dict, rigid: dict, fine: np.ndarray | None, skipped: dict) -> None:
        """Store the parsed versions (only called once the whole snapshot is valid); note the skipped entries'
        patches as approximate and their bases as never to be applied."""
        assert self.layout is not None
        newest = max(self._applied) if self._applied else -1
        for pid, (base_seq, shown) in skipped.items():
            self.skipped_entries += 1
            self._needed.add(base_seq)
            if shown is not None:
                self._surface_q[self.layout.patch(pid)] = shown
                self._patch_latest[pid] = seq
                self.approximate.setdefault(pid, seq)
        if skipped or len(self._needed) > 4 * ACK_BITS:
            self._needed = {s for s in self._needed if s > max(seq, newest) - 4 * ACK_BITS}
        if not self._applied or seq > max(self._applied):
            self._fine_latest = fine
        for pid, (base_seq, q) in patches.items():
            versions = self._patch_versions[pid]
            _store(versions, seq, q, base_seq, self.max_versions)
            if seq > self._patch_latest[pid]:
                self._patch_latest[pid] = seq
                self._surface_q[self.layout.patch(pid)] = q
                self.approximate.pop(pid, None)
        for oid, (base_seq, version) in rigid.items():
            versions = self._rigid_versions.setdefault(oid, {})
            _store(versions, seq, version, base_seq, self.max_versions)
            if seq > self._rigid_latest.get(oid, -1):
                self._rigid_latest[oid] = seq
        self._applied.append(seq)
        del self._applied[: -4 * ACK_BITS]


def _store(versions: dict, seq: int, value: object, base_seq: int | None, max_versions: int) -> None:
    """Add a version; drop versions older than the baseline the server just used (it will never use
    them again) and the oldest beyond ``max_versions``."""
    versions[seq] = value
    if base_seq is not None:
        for s in [s for s in versions if s < base_seq]:
            del versions[s]
    while len(versions) > max_versions:
        del versions[min(versions)]
