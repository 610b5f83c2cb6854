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
"""

from __future__ import annotations

import numba
import numpy as np

from netcode.sync.bitcode import bit_length, eg_len, flush_bits, put_bits, put_eg
from netcode.sync.snapshot import NO_JAW, RECORD_RIGID

VERSION = 5
"""int64 values of a rigid version row: x, y, z (grid), rotation code, jaw code."""
FULL_WEIGHT = 64.0
"""Weight (in steps) of an object the client has no acknowledged version of (as ``snapshot_codec``)."""

_jit = numba.njit(cache=True, nogil=True)


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
def write_entry(out, now, base, kind, full, rotation_bits, jaw_bits):
    """One rigid entry body alone at ``out[0:]`` (padded to a byte), for checks against
    ``snapshot.rigid_entry_body``; returns its length in bits."""
    st = np.zeros(4, np.int64)
    _entry(out, st, True, now, base, kind, full, rotation_bits, jaw_bits, np.zeros(3, np.int64))
    flush_bits(out, st[0], st[1], st[2])
    return st[3]
