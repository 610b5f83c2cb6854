"""The per-client snapshot encoder's rigid part, in nogil numba kernels on flat arrays (SNAPSHOT.md 2.1).

``SnapshotServer.encode`` writes a client's rigid record here instead of in Python (it was about 17 us per
client per frame in Python: dict look-ups, tuples, a bit string in a Python int), so that the whole
per-client encode is compiled code that releases the GIL, and a room's clients can be encoded off the reactor
thread, in parallel with other rooms.

A client's view of the rigid objects is kept in ``RigidTracks``: per object *slot* (the server gives every
rigid id it has seen a slot, ``SnapshotServer``) whether a track exists, the acknowledged version (its
snapshot sequence and ``[x, y, z, rotation code, jaw code]``), the version last sent and when, and the
priority accumulator. A version row is ``VERSION`` int64 values: grid position, smallest-three rotation code,
jaw code (``NO_JAW`` when the object has none).

The bytes are exactly those of ``snapshot.rigid_entry_body`` / ``rigid_record`` (the decoders, the JS one
included, read them): the same Exp-Golomb orders (``best_k``), the same choice between a delta and an absolute
rotation or jaw, the same priority order (accumulator, then position in the frame) and the same greedy fit to
the room left in the snapshot (``tests/netcode/sync/test_encode_kernels.py`` holds them to recorded bytes).

``encode_clients`` encodes every client of a frame in one call (header, drive record, rigid and patch records,
bookkeeping), so that a room's frame takes the GIL once instead of once per client: each client's state arrays
reach it as a row of addresses (``client_arrays`` / ``client_row``, checked for dtype, shape and layout when the
row is built, and kept alive by the caller for the call).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from netcode.sync.bitcode import (
    HEADER_BITS,
    PLAN_SIZE,
    RUNS,
    bit_length,
    block_bits,
    block_put,
    eg_len,
    flush_bits,
    header_bits,
    put_bits,
    put_eg,
)
from netcode.sync.priority import DEFAULT_NEAR_GAIN, DEFAULT_NEAR_RADIUS, interest_kernel, update_order
from netcode.sync.snapshot import MAX_GROUP, NO_JAW, RECORD_PATCH, RECORD_RIGID

VERSION = 5
"""int64 values of a rigid version row: x, y, z (grid), rotation code, jaw code."""
FULL_WEIGHT = 64.0
"""Weight (in steps) of an object the client has no baseline for."""
FULL_RESEND_STEPS = 2.0
"""A full record sent and not yet acknowledged is sent again before ``resend_after`` only if the truth
moved this many grid steps beyond the error bound away from it (a full record is ~100 times a delta)."""
MAX_MISFITS = 8
"""Patch records tried in vain (too big for the room left) before the packet is closed."""

_jit = numba.njit(cache=True, nogil=True)

OPTIMISTIC_WINDOW = 16
"""A patch's delta is coded against the version last sent to the client (not yet acknowledged: an *optimistic*
baseline, SNAPSHOT.md 2.2) only while that was sent at most this many frames ago (its fate is then still
unknown, and well within the 32 frames an ack's bits cover)."""

CLIENT_ARRAYS = 19
"""A client's state arrays as ``encode_clients`` takes them (``client_arrays``): its rigid tracks' 8, then
acked_q, sent_q, acked_seq, ever_sent, last_sent, carried, priority accumulators, acked_full, carry_acked,
chain_start, broken."""


class RigidTracks:
    """One client's per-slot rigid state as flat arrays (see the module doc); grows with the server's slots."""

    __slots__ = ("acc", "acked", "acked_seq", "exists", "has_acked", "has_sent", "last_sent", "sent")

    def __init__(self, capacity: int = 8) -> None:
        self.exists = np.zeros(capacity, np.bool_)
        self.has_acked = np.zeros(capacity, np.bool_)
        self.acked_seq = np.full(capacity, -1, np.int64)
        self.acked = np.zeros((capacity, VERSION), np.int64)
        self.has_sent = np.zeros(capacity, np.bool_)
        self.sent = np.zeros((capacity, VERSION), np.int64)
        self.last_sent = np.full(capacity, -(1 << 40), np.int64)
        self.acc = np.zeros(capacity)

    @property
    def capacity(self) -> int:
        return len(self.exists)

    def ensure(self, slots: int) -> None:
        """Room for ``slots`` slots (doubling; new slots have no track yet)."""
        if slots <= self.capacity:
            return
        grown = RigidTracks(max(slots, 2 * self.capacity))
        n = self.capacity
        for name in self.__slots__:
            getattr(grown, name)[:n] = getattr(self, name)
        for name in self.__slots__:
            setattr(self, name, getattr(grown, name))


# ------------------------------------------------------------------------------------------ bit helpers


@_jit
def _zz(v: int) -> int:
    return (v << 1) ^ (v >> 63)


@_jit
def _emit(out, st, value, nbits, write):
    """Append ``nbits`` (<= 63) low bits of ``value``; ``st`` = [byte pos, pending bits, pending count, total
    bits]. Without ``write`` only the total grows (sizing)."""
    st[3] += nbits
    if not write:
        return
    while nbits > 0:
        t = min(nbits, 32)
        p, a, n = put_bits(out, st[0], st[1], st[2], value & ((1 << t) - 1), t)
        st[0], st[1], st[2] = p, a, n
        value >>= t
        nbits -= t


@_jit
def _emit_eg(out, st, u, k, write):
    """Append the Exp-Golomb(k) code of ``u`` (see ``_emit``)."""
    st[3] += eg_len(u, k)
    if write:
        p, a, n = put_eg(out, st[0], st[1], st[2], u, k)
        st[0], st[1], st[2] = p, a, n


@_jit
def best_k(values, count):
    """``snapshot.best_k`` of ``values[:count]``: from the largest bit length (at most 15) down while the total
    length does not grow."""
    top = 0
    for i in range(count):
        top = max(top, bit_length(values[i]))
    top = min(15, top)
    best = top
    best_bits = 1 << 30
    for k in range(top, -1, -1):
        bits = count * k
        for i in range(count):
            bits += bit_length((values[i] >> k) + 1) << 1
        if bits > best_bits:
            break
        if bits < best_bits:
            best = k
            best_bits = bits
    return best


@_jit
def _entry(out, st, write, now, base, kind, full, rotation_bits, jaw_bits, zz):
    """A rigid entry's body after its age (``snapshot.rigid_entry_body``): full (with ``kind``) or a delta of
    version ``now`` against ``base`` (VERSION rows); ``zz`` (3,) int64 scratch."""
    if full:
        _emit(out, st, kind & 7, 3, write)
        has_pos = True
        for a in range(3):
            zz[a] = _zz(now[a])
    else:
        has_pos = False
        for a in range(3):
            d = now[a] - base[a]
            has_pos = has_pos or d != 0
            zz[a] = _zz(d)
    if not has_pos:
        _emit(out, st, 0, 1, write)
    else:
        k = best_k(zz, 3)
        _emit(out, st, 1 | (k << 1), 5, write)
        for a in range(3):
            _emit_eg(out, st, zz[a], k, write)
    rot = now[3]
    if not full and rot == base[3]:
        _emit(out, st, 0, 1, write)
    else:
        _emit(out, st, 1, 1, write)
        width = 2 + 3 * rotation_bits
        delta = False
        k = 0
        if not full and rot >> (3 * rotation_bits) == base[3] >> (3 * rotation_bits):
            mask = (1 << rotation_bits) - 1
            b = base[3]
            zz[0] = _zz((rot >> (2 * rotation_bits) & mask) - (b >> (2 * rotation_bits) & mask))
            zz[1] = _zz((rot >> rotation_bits & mask) - (b >> rotation_bits & mask))
            zz[2] = _zz((rot & mask) - (b & mask))
            k = best_k(zz, 3)
            delta = 4 + eg_len(zz[0], k) + eg_len(zz[1], k) + eg_len(zz[2], k) < width
        if not delta:
            _emit(out, st, 0, 1, write)
            _emit(out, st, rot, width, write)
        else:
            _emit(out, st, 1 | (k << 1), 5, write)
            for a in range(3):
                _emit_eg(out, st, zz[a], k, write)
    jaw = now[4]
    if jaw == NO_JAW or (not full and jaw == base[4]):
        _emit(out, st, 0, 1, write)
    else:
        _emit(out, st, 1, 1, write)
        delta = False
        k = 0
        u = 0
        if not full and base[4] != NO_JAW:
            u = _zz(jaw - base[4])
            zz[0] = u
            k = best_k(zz, 1)
            delta = 4 + eg_len(u, k) < jaw_bits
        if not delta:
            _emit(out, st, 0, 1, write)
            _emit(out, st, jaw & ((1 << jaw_bits) - 1), jaw_bits, write)
        else:
            _emit(out, st, 1 | (k << 1), 5, write)
            _emit_eg(out, st, u, k, write)


@_jit
def _change(now, base, has_base):
    """Grid steps of position change, or 1 for any orientation/jaw change (``FULL_WEIGHT`` without a base)."""
    if not has_base:
        return FULL_WEIGHT
    steps = float(max(abs(now[0] - base[0]), abs(now[1] - base[1]), abs(now[2] - base[2])))
    if steps < 1.0 and (now[3] != base[3] or now[4] != base[4]):
        return 1.0
    return steps


@_jit
def _record_bits(ids, ages, body_bits, by_id, chosen, extra):
    """Bits of the entries of a rigid record: the ``chosen`` offers (and offer ``extra`` >= 0), in id order."""
    bits = 0
    prev_id = -1
    prev_age = -1
    for t in range(len(by_id)):
        i = by_id[t]
        if not (chosen[i] or i == extra):
            continue
        bits += eg_len(ids[i] - prev_id - 1, 0) + 1 + (0 if ages[i] == prev_age else eg_len(ages[i], 0)) + body_bits[i]
        prev_id = ids[i]
        prev_age = ages[i]
    return bits


@_jit
def _record_size(count, bits):
    """Bytes of a rigid record of ``count`` entries of ``bits`` bits (tag, varint count, entries)."""
    return 1 + max(1, (bit_length(count) + 6) // 7) + (bits + 7) // 8


@_jit
def encode_rigid(
    out,
    pos,
    room,
    seq,
    resend_after,
    ids,
    slots,
    kinds,
    versions,
    weights,
    exists,
    has_acked,
    acked_seq,
    acked,
    has_sent,
    sent,
    last_sent,
    acc,
    rotation_bits,
    jaw_bits,
    taken,
):
    """One client's rigid record at ``out[pos:]``, at most ``room`` bytes; returns (position after it, objects
    sent). Writes nothing (0 objects) when nothing changed or nothing fits.

    Per object of the frame (``ids``, ``slots``, ``kinds``, ``versions`` (n, VERSION), interest ``weights``):
    its accumulator grows by its change since the acknowledged version (or since the version sent, when that is
    off too and was acknowledged once) times its interest, if it was never sent, moved since it was sent, or was
    sent ``resend_after`` frames ago; changed objects are offered by accumulator (ties: frame order), the record
    holds all of them when it fits, else, in that order, each that still fits; entries in id order. The objects
    sent (their frame indices, ascending id, in ``taken[:count]``) get their accumulator reset and are marked
    sent at ``seq``; a new slot gets a track.
    """
    n = len(ids)
    offers = np.empty(n, np.int64)
    keys = np.empty(n)
    count = 0
    for j in range(n):
        s = slots[j]
        if not exists[s]:
            exists[s] = True
            has_acked[s] = False
            acked_seq[s] = -1
            has_sent[s] = False
            last_sent[s] = -(1 << 40)
            acc[s] = 0.0
        now = versions[j]
        change_ack = _change(now, acked[s], has_acked[s])
        if change_ack == 0.0:
            acc[s] = 0.0
            continue
        moved = has_sent[s] and _change(now, sent[s], True) > 0.0
        if not has_sent[s] or moved or seq - last_sent[s] >= resend_after:
            steps = _change(now, sent[s], True) if moved and has_acked[s] else change_ack
            acc[s] += max(1.0, steps) * weights[j]
        if acc[s] > 0:
            offers[count] = j
            keys[count] = -acc[s]
            count += 1
    if count == 0:
        return pos, 0
    order = offers[:count][np.argsort(keys[:count], kind="mergesort")]  # accumulator, then frame order
    o_ids = np.empty(count, np.int64)
    ages = np.empty(count, np.int64)
    body_bits = np.empty(count, np.int64)
    st = np.zeros(4, np.int64)
    zz = np.zeros(3, np.int64)
    for i in range(count):
        j = order[i]
        s = slots[j]
        o_ids[i] = ids[j]
        ages[i] = seq - acked_seq[s] if has_acked[s] else 0
        st[3] = 0
        _entry(out, st, False, versions[j], acked[s], kinds[j], not has_acked[s], rotation_bits, jaw_bits, zz)
        body_bits[i] = st[3]
    by_id = np.argsort(o_ids, kind="mergesort")
    chosen = np.ones(count, np.bool_)
    n_taken = count
    if _record_size(count, _record_bits(o_ids, ages, body_bits, by_id, chosen, -1)) > room:
        chosen[:] = False
        n_taken = 0
        for i in range(count):  # in priority order, each while the record still fits
            if _record_size(n_taken + 1, _record_bits(o_ids, ages, body_bits, by_id, chosen, i)) <= room:
                chosen[i] = True
                n_taken += 1
        if n_taken == 0:
            return pos, 0
    out[pos] = RECORD_RIGID
    p = pos + 1
    v = n_taken
    while v >= 0x80:
        out[p] = (v & 0x7F) | 0x80
        v >>= 7
        p += 1
    out[p] = v
    st[0] = p + 1
    st[1] = 0
    st[2] = 0
    prev_id = -1
    prev_age = -1
    t = 0
    for b in range(count):
        i = by_id[b]
        if not chosen[i]:
            continue
        j = order[i]
        s = slots[j]
        _emit_eg(out, st, o_ids[i] - prev_id - 1, 0, True)
        _emit(out, st, 1 if ages[i] == prev_age else 0, 1, True)
        if ages[i] != prev_age:
            _emit_eg(out, st, ages[i], 0, True)
        _entry(out, st, True, versions[j], acked[s], kinds[j], not has_acked[s], rotation_bits, jaw_bits, zz)
        prev_id = o_ids[i]
        prev_age = ages[i]
        taken[t] = j
        t += 1
    end = flush_bits(out, st[0], st[1], st[2]) if st[0] >= 0 else -1
    if end < 0:
        raise AssertionError("rigid record runs past the snapshot buffer")
    for i in range(count):
        if chosen[i]:
            s = slots[order[i]]
            acc[s] = 0.0
            has_sent[s] = True
            sent[s, :] = versions[order[i]]
            last_sent[s] = seq
    return end, n_taken


@_jit
def rigid_acked(sequence, slots, versions, exists, has_acked, acked_seq, acked):
    """The client acknowledged snapshot ``sequence``, which carried these versions: each becomes the object's
    acknowledged version where it is newer than the one it has."""
    for i in range(len(slots)):
        s = slots[i]
        if exists[s] and sequence > acked_seq[s]:
            acked_seq[s] = sequence
            has_acked[s] = True
            acked[s, :] = versions[i]


@_jit
def snapshot_acked(
    sequence, patches, rows, full, bases, offsets, acked_seq, acked_q, carried, acked_full,
    slots, versions, exists, has_acked, r_acked_seq, r_acked,
):  # fmt: skip
    """The client acknowledged snapshot ``sequence``, which carried ``patches`` (ascending) with these ``rows``
    (concatenated, as ``record_sent`` gathers them), ``full`` flags and optimistic ``bases`` (the sequence of the
    unacknowledged version a delta was coded against, -1: none), and rigid objects (``rigid_acked``): each patch
    whose acked version is older takes them, except a patch coded against an optimistic base the client is not
    known to hold (its acked version is not that base: the client skipped the entry, SNAPSHOT.md 2.2; acks are
    applied oldest first); every one of them is acknowledged in this epoch (not carried any more). One call per
    ack instead of a handful of numpy ones."""
    rigid_acked(sequence, slots, versions, exists, has_acked, r_acked_seq, r_acked)
    j = 0
    for k in range(len(patches)):
        p = patches[k]
        s = offsets[p]
        n = offsets[p + 1] - s
        if bases[k] >= 0 and acked_seq[p] != bases[k]:
            j += n
            continue
        if acked_seq[p] < sequence:
            acked_seq[p] = sequence
            for i in range(n):
                for a in range(3):
                    acked_q[s + i, a] = rows[j + i, a]
            acked_full[p] = full[k]
        carried[p] = False
        j += n


@_jit
def write_entry(out, now, base, kind, full, rotation_bits, jaw_bits):
    """One rigid entry body alone at ``out[0:]`` (padded to a byte), for checks against
    ``snapshot.rigid_entry_body``; returns its length in bits."""
    st = np.zeros(4, np.int64)
    _entry(out, st, True, now, base, kind, full, rotation_bits, jaw_bits, np.zeros(3, np.int64))
    flush_bits(out, st[0], st[1], st[2])
    return st[3]


# ------------------------------------------------------------------------------------------ patches


@_jit
def _fits(x: float, v: int, origin: float, step: float, max_error: float) -> bool:
    """Whether grid value ``v`` decodes within ``max_error`` of ``x`` (the decoder's exact arithmetic)."""
    return abs(x - (origin + float(v) * step)) <= max_error


@_jit
def patch_weights(
    x, origin, step, bounds, acked, sent, offsets, acked_seq, ever_sent, last_sent, seq, resend_after, near, carried,
    broken,
):  # fmt: skip
    """Per patch: whether the client's acked version, or the version last sent to it (which it shows once
    it arrives), is off the truth ``x`` by more than the patch's bound ``bounds[p]`` (``pending``), the
    priority weight this frame, and the age code; returns (pending, weights, codes).

    The change is measured in steps of the worst coordinate, against the acked version, or against the
    version last sent when that one is off too (it was sent, is not acked yet, and is already stale).
    A patch the client has no version of weighs ``FULL_WEIGHT``. A pending patch that was sent and not
    acked only competes again after ``resend_after`` frames unless it changed since; for a patch that
    would go in full (no baseline, none ``carried`` over a cut) "changed" means off the version sent by
    more than ``FULL_RESEND_STEPS`` steps beyond the bound, so that solver jitter does not resend the whole
    patch every frame of the round trip after a join. ``near`` is the interest of each patch for the client.
    A ``broken`` patch (a send of it since its last anchor is known lost: the client shows an older version, or
    an approximate one, SNAPSHOT.md 2.2) is pending and competes at once, weighed by its acked version's offset
    (at least a step).
    """
    n_p = len(offsets) - 1
    pending = np.zeros(n_p, np.bool_)
    weights = np.zeros(n_p)
    ages = np.zeros(n_p, np.int64)
    for p in range(n_p):
        max_error = bounds[p]
        ma = 0.0
        ms = 0.0
        for i in range(offsets[p], offsets[p + 1]):
            for a in range(3):
                da = abs(x[i, a] - (origin[a] + float(acked[i, a]) * step))
                ds = abs(x[i, a] - (origin[a] + float(sent[i, a]) * step))
                if da > max_error and da > ma:
                    ma = da
                if ds > max_error and ds > ms:
                    ms = ds
        has_base = acked_seq[p] >= 0
        pending[p] = not has_base or ma > 0.0 or (ever_sent[p] and ms > 0.0) or broken[p]
        if not pending[p]:
            continue
        moved = ever_sent[p] and ms > (0.0 if has_base or carried[p] else max_error + FULL_RESEND_STEPS * step)
        lost = has_base and broken[p]
        if not (not ever_sent[p] or moved or lost or seq - last_sent[p] >= resend_after):
            continue
        steps = (ms if moved else ma) / step if has_base else FULL_WEIGHT
        if lost and not moved:
            steps = max(1.0, ma / step)
        weights[p] = steps * near[p]
    for p in range(n_p):  # age codes (SNAPSHOT.md 2.2): 0 full, 1 carried, a + 1 delta of age a
        if acked_seq[p] >= 0:
            ages[p] = seq - acked_seq[p] + 1
        elif carried[p]:
            ages[p] = 1
    return pending, weights, ages


@_jit
def optimistic_bases(seq, acked_seq, ever_sent, last_sent, broken, chain_start, window, anchor_every, motion,
                     max_motion, codes, fallbacks, opt_base):  # fmt: skip
    """Per patch with an acked version: code it against the version last sent instead (an *optimistic* baseline,
    SNAPSHOT.md 2.2) when that is newer than the acked one and was sent at most ``window`` frames ago, no send of
    the patch since its last delta against an acked version (its *anchor*, ``chain_start``) is known lost
    (``broken``), that anchor is less than ``anchor_every`` frames old (so a lost base is shown approximately
    for fewer frames than that; 1: never optimistic), and the patch moved at most ``max_motion`` (metres, worst
    coordinate) since the last frame (``motion[p]``: what a client that lost the base shows is about one frame's
    motion off; a severed flap in free fall moves centimetres a frame). Rewrites ``codes`` (age code of the last
    sent version), sets ``fallbacks`` (the acked version's age beyond it, written after the age code) and
    ``opt_base`` (the sequence of the optimistic base; -1 where the delta is against the acked version)."""
    for p in range(len(codes)):
        fallbacks[p] = 0
        opt_base[p] = -1
        a = acked_seq[p]
        if a < 0 or not ever_sent[p] or broken[p]:
            continue
        s = last_sent[p]
        if s <= a or seq - s > window or seq - chain_start[p] >= anchor_every or motion[p] > max_motion:
            continue
        codes[p] = seq - s + 1
        fallbacks[p] = s - a
        opt_base[p] = s


@_jit
def choose_delta(x, q, base, origin, step, max_error, s, n, d):
    """Fill ``d[:n]`` with a delta against ``base[s:s+n]`` whose result is within the error bound of
    ``x[s:s+n]``, in as few runs of equal deltas as possible (per axis, in layout order).

    Every coordinate has an interval of admissible deltas (two or three grid values at the default step).
    A run extends while the intersection of its vertices' intervals is not empty; it then takes the value
    of that intersection nearest the previous run's (from 0 at the first). The number of runs is the
    fewest possible (a greedy cover of intervals is optimal), so still vertices keep delta 0 and a smooth
    motion becomes long runs of equal deltas, i.e. zero residuals, which the block coder's runs layout
    sends as run lengths (changes between runs are then mostly small). Where float rounding leaves no
    admissible value the shared quantized value ``q`` is used (a run of its own).
    """
    inv = 1.0 / step
    reach = max_error * inv
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    for a in range(3):
        o = origin[a]
        for i in range(n):
            xi = x[s + i, a]
            b = base[s + i, a]
            g = (xi - o) * inv  # lo/hi are candidates only: _fits decides exactly
            low = np.int64(np.ceil(g - reach))
            high = np.int64(np.floor(g + reach))
            while low <= high and not _fits(xi, low, o, step, max_error):
                low += 1
            while high >= low and not _fits(xi, high, o, step, max_error):
                high -= 1
            if low > high:
                low = high = np.int64(q[s + i, a])
            lo[i] = low - b
            hi[i] = high - b
        prev = 0
        i = 0
        while i < n:
            run_lo, run_hi = lo[i], hi[i]
            j = i + 1
            while j < n and max(run_lo, lo[j]) <= min(run_hi, hi[j]):
                run_lo = max(run_lo, lo[j])
                run_hi = min(run_hi, hi[j])
                j += 1
            prev = min(max(prev, run_lo), run_hi)
            for k in range(i, j):
                d[k, a] = prev
            i = j


@_jit
def record_sent(sent, seq, acc, ever_sent, last_sent, sent_q, offsets, codes, pending, opt_base, chain_start, broken):
    """After encoding one client's snapshot: the patches it carries (ascending), the versions it gave them
    (their rows of ``sent_q``, concatenated, int32), which went in full (age code 0) and their optimistic bases
    (``opt_base``, -1: none), for the client's history; their accumulators drop to 0 and they are marked sent at
    ``seq``; a patch sent against an acked version (or in full, or carried) starts a new chain of optimistic
    sends there (``chain_start``, not ``broken``). Also returns how many pending patches with a positive
    accumulator did not fit. One call instead of a handful of numpy ones."""
    count = 0
    total = 0
    skipped = 0
    for p in range(sent.shape[0]):
        if sent[p]:
            count += 1
            total += offsets[p + 1] - offsets[p]
        elif pending[p] and acc[p] > 0:
            skipped += 1
    idx = np.empty(count, np.int64)
    full = np.empty(count, np.bool_)
    bases = np.empty(count, np.int64)
    rows = np.empty((total, 3), np.int32)
    j = 0
    r = 0
    for p in range(sent.shape[0]):
        if not sent[p]:
            continue
        idx[j] = p
        full[j] = codes[p] == 0
        bases[j] = opt_base[p]
        if opt_base[p] < 0:
            chain_start[p] = seq
            broken[p] = False
        acc[p] = 0.0
        ever_sent[p] = True
        last_sent[p] = seq
        for i in range(offsets[p], offsets[p + 1]):
            for a in range(3):
                rows[r, a] = sent_q[i, a]
            r += 1
        j += 1
    return idx, rows, full, bases, skipped


@_jit
def _age_bits(age: int, fallback: int, prev_age: int, prev_fallback: int) -> int:
    """Bits of a patch entry's same-age bit, age code and fallback (SNAPSHOT.md 2.2)."""
    if age == prev_age and fallback == prev_fallback:
        return 1
    return 1 + eg_len(age, 0) + (eg_len(fallback, 0) if age >= 2 else 0)


@_jit
def _entry_bits(gap, age, prev_age, fallback, prev_fallback, plan, prev_plan, carried):
    """Bits of a patch entry's id gap, age code and fallback, carried ages (``carried`` bits) and block header
    (SNAPSHOT.md), without the block's body."""
    return eg_len(gap, 0) + _age_bits(age, fallback, prev_age, prev_fallback) + carried + header_bits(plan, prev_plan)


@_jit
def carried_ages(seq, acked_seq_old, sources, out_ages, offsets, out_bits):
    """Per new patch, the ages of its source patches' acked versions (0 where not acked) into
    ``out_ages`` and the bits they take (sum of EG(0)) into ``out_bits``."""
    for p in range(len(offsets) - 1):
        bits = 0
        for j in range(offsets[p], offsets[p + 1]):
            s = acked_seq_old[sources[j]]
            a = seq - s if s >= 0 else 0
            out_ages[j] = a
            bits += eg_len(a, 0)
        out_bits[p] = bits


@_jit
def _insert_bits(p, d, dense, sparse, plans, offsets, sent, ages, fallbacks, carry_bits, first):
    """Exact bits of patch ``p``'s entry with block ``d[offsets[p]:offsets[p + 1]]`` (planned into ``plans[p]``)
    inserted between the chosen patches a < p < b (ids are written ascending; the age and block header are
    coded relative to the previous entry's)."""
    n_p = len(offsets) - 1
    s = offsets[p]
    e = offsets[p + 1]
    body = block_bits(d[s:e], dense[s:e], sparse[s:e], plans[p]) - HEADER_BITS
    a = p - 1
    while a >= 0 and not sent[a]:
        a -= 1
    b = p + 1
    while b < n_p and not sent[b]:
        b += 1
    age = ages[p]
    fb = fallbacks[p]
    age_a = ages[a] if a >= 0 else -1
    fb_a = fallbacks[a] if a >= 0 else -1
    plan_a = plans[a] if a >= 0 else first
    bits = _entry_bits(p - a - 1, age, age_a, fb, fb_a, plans[p], plan_a, carry_bits[p]) + body
    if b < n_p:
        bits += _entry_bits(b - p - 1, ages[b], age, fallbacks[b], fb, plans[b], plans[p], carry_bits[b])
        bits -= _entry_bits(b - a - 1, ages[b], age_a, fallbacks[b], fb_a, plans[b], plan_a, carry_bits[b])
    return bits


@_jit
def encode_patch_records(
    q,
    x,
    origin,
    step,
    bounds,
    acked,
    ages,
    offsets,
    order,
    out,
    pos,
    limit,
    d,
    dense,
    sparse,
    plans,
    sent,
    sent_q,
    carry_bits,
    carry_off,
    carry_ages,
    settle,
    fallbacks,
    opt_base,
):
    """Append one patch record (SNAPSHOT.md) holding the patches of ``order`` that fit ``out[:limit]``;
    returns (position, patches written). Writes nothing if none fits.

    Deltas are chosen within each patch's bound ``bounds[p]`` (coarser while it moves, ``MotionBound``).

    Patches are chosen in ``order`` (priority), each costed exactly for its place among the chosen ones,
    then written in ascending id order (ids as gaps, mostly 1 bit). ``ages`` holds age *codes*: a patch
    with code 0 is sent in full (the shared grid coordinates ``q``), else as a delta against ``acked``
    chosen by ``choose_delta``: code 1 is a carried baseline (after a cut; its source ages
    ``carry_ages[carry_off[p]:carry_off[p + 1]]`` follow, ``carry_bits[p]`` bits), code a + 1 an acked
    version of age a: the acked one, or, where ``opt_base[p] >= 0``, the version last sent (``sent_q``, not yet
    acknowledged), with the acked one named ``fallbacks[p]`` frames before it.
    ``d``, ``dense``, ``sparse`` are (N, 3) int64 scratch rows per vertex, ``plans`` (P, PLAN_SIZE).
    ``sent[p]`` is set and ``sent_q`` receives the version the client will hold for every patch written.
    """
    start = pos
    n_p = len(offsets) - 1
    if limit - start < 6 or len(order) == 0:
        return start, 0
    room = (limit - start - 3) * 8
    first = np.zeros(PLAN_SIZE, np.int64)
    first[0] = RUNS  # the header of a record's first block is relative to [runs, 0, 0, 0]
    used = 0
    count = 0
    misfits = 0
    for c in range(len(order)):
        if room - used < 7 or misfits >= MAX_MISFITS or count == MAX_GROUP:
            break
        p = order[c]
        s = offsets[p]
        e = offsets[p + 1]
        age = ages[p]
        base = sent_q if opt_base[p] >= 0 else acked
        if age > 0 and settle[p] and opt_base[p] < 0:  # the acked version is a full record's: the settled values
            for i in range(s, e):
                for a in range(3):
                    d[i, a] = q[i, a] - acked[i, a]
        elif age > 0:
            choose_delta(x, q, base, origin, step, bounds[p], s, e - s, d[s:e])
        else:
            for i in range(s, e):
                for a in range(3):
                    d[i, a] = q[i, a]
        bits = _insert_bits(p, d, dense, sparse, plans, offsets, sent, ages, fallbacks, carry_bits, first)
        if used + bits > room:
            misfits += 1
            continue
        used += bits
        sent[p] = True
        count += 1
    if count == 0:
        return start, 0
    pos = start + 3
    acc = 0
    nacc = 0
    prev_id = -1
    prev_age = -1
    prev_fb = -1
    prev_plan = first[:4].copy()
    for p in range(n_p):
        if not sent[p]:
            continue
        s = offsets[p]
        e = offsets[p + 1]
        age = ages[p]
        fb = fallbacks[p]
        same = age == prev_age and fb == prev_fb
        pos, acc, nacc = put_eg(out, pos, acc, nacc, p - prev_id - 1, 0)
        pos, acc, nacc = put_bits(out, pos, acc, nacc, 1 if same else 0, 1)
        if not same:
            pos, acc, nacc = put_eg(out, pos, acc, nacc, age, 0)
            if age >= 2:
                pos, acc, nacc = put_eg(out, pos, acc, nacc, fb, 0)
        if age == 1:
            for j in range(carry_off[p], carry_off[p + 1]):
                pos, acc, nacc = put_eg(out, pos, acc, nacc, carry_ages[j], 0)
        pos, acc, nacc = block_put(d[s:e], dense[s:e], sparse[s:e], plans[p], out, pos, acc, nacc, prev_plan)
        prev_id = p
        prev_age = age
        prev_fb = fb
        base = sent_q if opt_base[p] >= 0 else acked
        for i in range(s, e):
            for a in range(3):
                sent_q[i, a] = d[i, a] + (base[i, a] if age > 0 else 0)
    if pos < 0 or (pos - start - 3) * 8 + nacc != used:
        raise AssertionError("patch record size differs from its plan")
    pos = flush_bits(out, pos, acc, nacc)
    out[start] = RECORD_PATCH
    out[start + 1] = count & 0xFF
    out[start + 2] = count >> 8
    return pos, count


# ------------------------------------------------------------------------------------------ one client


@_jit
def _interest(points, focus):
    """``priority.interest`` of ``points`` for a client whose instruments and gaze are at ``focus``."""
    out = np.ones(points.shape[0])
    if focus.shape[0] and points.shape[0]:
        interest_kernel(points, focus, DEFAULT_NEAR_RADIUS, DEFAULT_NEAR_GAIN, out)
    return out


@_jit
def encode_client(
    out,
    pos,
    limit,
    patch_limit,
    seq,
    resend_after,
    focus,
    rigid_ids,
    rigid_slots,
    rigid_kinds,
    rigid_versions,
    rigid_points,
    exists,
    has_acked,
    r_acked_seq,
    r_acked,
    has_sent,
    r_sent,
    r_last_sent,
    r_acc,
    rotation_bits,
    jaw_bits,
    taken,
    surface,
    coded,
    centroids,
    origin,
    step,
    bounds,
    acked_q,
    sent_q,
    offsets,
    acked_seq,
    ever_sent,
    last_sent,
    carried,
    acc,
    settle,
    use_carry,
    carry_acked,
    chain_start,
    broken,
    anchor_every,
    motion,
    max_motion,
    carry_sources,
    carry_offsets,
    d,
    dense,
    sparse,
    plans,
):
    """One client's rigid record (``encode_rigid``, at most ``limit - pos`` bytes) then patch record (patches
    up to ``patch_limit``) at ``out[pos:]``, in one compiled call (the GIL is released throughout): interest,
    patch weights, accumulators, carried ages after a cut (``use_carry``), the writers, the sent bookkeeping.
    ``bounds`` (P,) is each patch's error bound this frame. Returns (position, rigid objects sent, patches
    sent, sent patch ids, their rows, sent in full, their optimistic bases, skipped). Deltas go against the
    version last sent where ``optimistic_bases`` allows it, else against the acked one."""
    n_rigid = 0
    if len(rigid_ids):
        pos, n_rigid = encode_rigid(
            out,
            pos,
            limit - pos,
            seq,
            resend_after,
            rigid_ids,
            rigid_slots,
            rigid_kinds,
            rigid_versions,
            _interest(rigid_points, focus),
            exists,
            has_acked,
            r_acked_seq,
            r_acked,
            has_sent,
            r_sent,
            r_last_sent,
            r_acc,
            rotation_bits,
            jaw_bits,
            taken,
        )
    n_p = len(offsets) - 1
    pending, weights, codes = patch_weights(
        coded,
        origin,
        step,
        bounds,
        acked_q,
        sent_q,
        offsets,
        acked_seq,
        ever_sent,
        last_sent,
        seq,
        resend_after,
        _interest(centroids, focus),
        carried,
        broken,
    )
    fallbacks = np.zeros(n_p, np.int64)
    opt_base = np.full(n_p, -1, np.int64)
    optimistic_bases(
        seq, acked_seq, ever_sent, last_sent, broken, chain_start, OPTIMISTIC_WINDOW, anchor_every, motion, max_motion,
        codes, fallbacks, opt_base,
    )  # fmt: skip
    order = update_order(acc, weights, pending)
    if use_carry and carried.any():
        carry_ages = np.zeros(len(carry_sources), np.int64)
        carry_bits = np.zeros(n_p, np.int64)
        carried_ages(seq, carry_acked, carry_sources, carry_ages, carry_offsets, carry_bits)
        for p in range(n_p):
            if codes[p] != 1:
                carry_bits[p] = 0
        carry_off = carry_offsets
    else:
        carry_ages = np.zeros(0, np.int64)
        carry_bits = np.zeros(n_p, np.int64)
        carry_off = np.zeros(n_p + 1, np.int64)
    sent = np.zeros(n_p, np.bool_)
    pos, n_patches = encode_patch_records(
        surface,
        coded,
        origin,
        step,
        bounds,
        acked_q,
        codes,
        offsets,
        order,
        out,
        pos,
        patch_limit if patch_limit >= 0 else pos,
        d,
        dense,
        sparse,
        plans,
        sent,
        sent_q,
        carry_bits,
        carry_off,
        carry_ages,
        settle,
        fallbacks,
        opt_base,
    )
    idx, rows, full, bases, skipped = record_sent(
        sent, seq, acc, ever_sent, last_sent, sent_q, offsets, codes, pending, opt_base, chain_start, broken
    )
    return pos, n_rigid, n_patches, idx, rows, full, bases, skipped


# ------------------------------------------------------------------------------------------ all clients


def client_arrays(tracks: RigidTracks, acked_q, sent_q, acked_seq, ever_sent, last_sent, carried, acc, acked_full,
                  carry_acked, chain_start, broken) -> tuple:  # fmt: skip
    """One client's state arrays in ``encode_clients``' order (``CLIENT_ARRAYS`` of them)."""
    t = tracks
    return (
        t.exists, t.has_acked, t.acked_seq, t.acked, t.has_sent, t.sent, t.last_sent, t.acc,
        acked_q, sent_q, acked_seq, ever_sent, last_sent, carried, acc, acked_full, carry_acked, chain_start, broken,
    )  # fmt: skip


def client_row(arrays: tuple, n_vertices: int, n_patches: int) -> tuple[np.ndarray, np.ndarray]:
    """(addresses (CLIENT_ARRAYS,) int64, dims [rigid capacity, carry_acked length]) of ``client_arrays``'s
    arrays for ``encode_clients``; ValueError unless each has the dtype, shape and C layout the kernel reads
    (it reads raw memory: nothing unchecked may reach it). The caller keeps the arrays alive while it runs."""
    cap = len(arrays[0])
    expected = (
        (np.bool_, (cap,)), (np.bool_, (cap,)), (np.int64, (cap,)), (np.int64, (cap, VERSION)),
        (np.bool_, (cap,)), (np.int64, (cap, VERSION)), (np.int64, (cap,)), (np.float64, (cap,)),
        (np.int32, (n_vertices, 3)), (np.int32, (n_vertices, 3)), (np.int64, (n_patches,)), (np.bool_, (n_patches,)),
        (np.int64, (n_patches,)), (np.bool_, (n_patches,)), (np.float64, (n_patches,)), (np.bool_, (n_patches,)),
        (np.int64, (len(arrays[16]),)), (np.int64, (n_patches,)), (np.bool_, (n_patches,)),
    )  # fmt: skip
    if len(arrays) != CLIENT_ARRAYS:
        raise ValueError(f"{len(arrays)} client arrays, expected {CLIENT_ARRAYS}")
    for i, (a, (dtype, shape)) in enumerate(zip(arrays, expected, strict=True)):
        if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
            raise ValueError(f"client array {i} is not a C-contiguous {np.dtype(dtype)} array of shape {shape}")
        if not a.flags.writeable:
            raise ValueError(f"client array {i} is read-only")
    addresses = np.array([a.ctypes.data for a in arrays], np.int64)
    return addresses, np.array([cap, len(arrays[16])], np.int64)


@intrinsic
def _pointer(typingctx, address):
    """The void pointer at an integer address (``client_row``'s addresses)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@_jit
def _bools(address, n):
    return numba.carray(_pointer(address), (n,), np.bool_)


@_jit
def _ints(address, n):
    return numba.carray(_pointer(address), (n,), np.int64)


@_jit
def _versions(address, n):
    return numba.carray(_pointer(address), (n, VERSION), np.int64)


@_jit
def _floats(address, n):
    return numba.carray(_pointer(address), (n,), np.float64)


@_jit
def _grid(address, n):
    return numba.carray(_pointer(address), (n, 3), np.int32)


@_jit
def encode_clients(
    out,
    bases,
    limits,
    resend,
    addresses,
    dims,
    focus,
    focus_offsets,
    headers,
    header_lengths,
    drives,
    seq,
    rigid_ids,
    rigid_slots,
    rigid_kinds,
    rigid_versions,
    rigid_points,
    rotation_bits,
    jaw_bits,
    taken,
    surface,
    coded,
    centroids,
    origin,
    step,
    bounds,
    offsets,
    use_carry,
    carry_sources,
    carry_offsets,
    d,
    dense,
    sparse,
    plans,
    ends,
    n_rigid,
    skipped,
    anchor_every,
    motion,
    max_motion,
):
    """Every client's snapshot of one frame in one call: client ``c``'s at ``out[bases[c]:ends[c]]``, at most
    ``limits[c]`` bytes: the header (``headers[r, :header_lengths[r]]`` for r records), the ``drives`` record
    when it fits (without it, no patches), then ``encode_client`` with its state arrays (``addresses[c]``, see
    ``client_row``), its ``resend[c]`` and its focus ``focus[focus_offsets[c]:focus_offsets[c + 1]]``. Per
    client into ``n_rigid``, ``taken[c]`` (the rigid objects sent) and ``skipped``; ``anchor_every[c]`` is the
    client's anchor interval (``optimistic_bases``; 1: acked baselines only). Returns (sent patch ids, their
    rows, sent in full, their optimistic bases, per client the start of its patches, the start of its rows),
    concatenated."""
    n_c = len(bases)
    n_v = surface.shape[0]
    n_p = len(offsets) - 1
    head = header_lengths[3]
    idx_all = np.empty(n_c * n_p, np.int64)
    full_all = np.empty(n_c * n_p, np.bool_)
    bases_all = np.empty(n_c * n_p, np.int64)
    rows_all = np.empty((n_c * n_v, 3), np.int32)
    idx_off = np.zeros(n_c + 1, np.int64)
    rows_off = np.zeros(n_c + 1, np.int64)
    for c in range(n_c):
        a = addresses[c]
        cap = dims[c, 0]
        base = bases[c]
        limit = base + limits[c]
        pos = base + head
        with_drives = len(drives) == 0 or head + len(drives) <= limits[c]
        if with_drives:
            for i in range(len(drives)):
                out[pos + i] = drives[i]
            pos += len(drives)
        records = 1 if with_drives and len(drives) > 0 else 0
        patch_limit = limit if with_drives else -1
        end, rigid_n, n_patches, idx, rows, full, opt, skip = encode_client(
            out,
            pos,
            limit,
            patch_limit,
            seq,
            resend[c],
            focus[focus_offsets[c] : focus_offsets[c + 1]],
            rigid_ids,
            rigid_slots,
            rigid_kinds,
            rigid_versions,
            rigid_points,
            _bools(a[0], cap),
            _bools(a[1], cap),
            _ints(a[2], cap),
            _versions(a[3], cap),
            _bools(a[4], cap),
            _versions(a[5], cap),
            _ints(a[6], cap),
            _floats(a[7], cap),
            rotation_bits,
            jaw_bits,
            taken[c],
            surface,
            coded,
            centroids,
            origin,
            step,
            bounds,
            _grid(a[8], n_v),
            _grid(a[9], n_v),
            offsets,
            _ints(a[10], n_p),
            _bools(a[11], n_p),
            _ints(a[12], n_p),
            _bools(a[13], n_p),
            _floats(a[14], n_p),
            _bools(a[15], n_p),
            use_carry,
            _ints(a[16], dims[c, 1]),
            _ints(a[17], n_p),
            _bools(a[18], n_p),
            anchor_every[c],
            motion,
            max_motion,
            carry_sources,
            carry_offsets,
            d,
            dense,
            sparse,
            plans,
        )
        if rigid_n > 0:
            records += 1
        if n_patches > 0:
            records += 1
        length = header_lengths[records]
        if length < head:  # fewer records than reserved for: close the gap
            for i in range(end - base - head):
                out[base + length + i] = out[base + head + i]
            end -= head - length
        for i in range(length):
            out[base + i] = headers[records, i]
        ends[c] = end
        n_rigid[c] = rigid_n
        skipped[c] = skip
        k = idx_off[c]
        for i in range(len(idx)):
            idx_all[k + i] = idx[i]
            full_all[k + i] = full[i]
            bases_all[k + i] = opt[i]
        idx_off[c + 1] = k + len(idx)
        r = rows_off[c]
        for i in range(rows.shape[0]):
            for j in range(3):
                rows_all[r + i, j] = rows[i, j]
        rows_off[c + 1] = r + rows.shape[0]
    n_sent = idx_off[n_c]
    return (
        idx_all[:n_sent].copy(),
        rows_all[: rows_off[n_c]].copy(),
        full_all[:n_sent].copy(),
        bases_all[:n_sent].copy(),
        idx_off,
        rows_off,
    )
