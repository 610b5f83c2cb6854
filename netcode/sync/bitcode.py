"""Entropy coding of small integer blocks (a patch's per-vertex deltas) with Exp-Golomb codes, in numba.

A *block* is an (n, 3) array of integers (grid deltas against a baseline, or absolute grid coordinates).
Neighbouring vertices of a patch move alike, so the coder sends each coded vertex's difference from the
previous coded vertex (a spatial residual), zig-zag mapped to unsigned and written as an Exp-Golomb code
of order k, one k per axis chosen to minimise the size. Three layouts, whichever is smallest:

* dense: every vertex is coded;
* sparse: an n-bit mask says which vertices are coded; the others are zero (unchanged);
* runs: per axis, the residuals of all n vertices as zero runs and non-zero values. The encoder picks
  deltas within the error bound that repeat their neighbour's value (``snapshot_codec``), so a smoothly
  moving patch is mostly zero residuals, which this layout sends as a few run lengths.

A block is a bit string (blocks of one snapshot follow each other without padding, SNAPSHOT.md)::

    header       standalone: 14 bits: bits 0-1 layout (0 dense, 1 sparse, 2 runs; 3 is invalid), bits
                 2-5, 6-9, 10-13: k of x, y, z. In a patch record: relative to the previous block's
                 header (a same-layout bit, [2 layout bits], Exp-Golomb(0) of zigzag(k - previous k)
                 per axis), see ``block_put``
    [sparse: n mask bits]
    dense/sparse: for each coded vertex, for x, y, z: Exp-Golomb(k) of the zigzagged residual
    runs: for x, then y, then z, with i = 0: while i < n: Exp-Golomb(k) run r of zero residuals
          (i + r <= n), i += r; if i == n stop; else Exp-Golomb(0) of zigzag(residual) - 1 (non-zero),
          i += 1

Exp-Golomb(k) of u: z zero bits, a one bit, then z + k bits. Residuals are differences from the previous
(coded) vertex, the first from 0. Bits are written LSB-first within bytes. ``block_bits``/``block_put``/
``block_get`` work on bit positions; ``block_plan``/``block_write``/``block_read`` (and ``BlockCoder``)
on a standalone block padded with zero bits to whole bytes.

Exact sizes are computed before anything is written, so the caller can fit blocks to a byte budget
without trial and error. Decoding checks every read against the end of the buffer and returns a negative
error code instead of raising (numba), see ``BLOCK_ERRORS``.
"""

from __future__ import annotations

import numba
import numpy as np

MAX_K = 15
MAX_PREFIX = 40
"""A prefix longer than this cannot come from our encoder (values are < 2^35): reject."""
BLOCK_ERRORS = {
    -1: "block runs past the end of the snapshot",
    -2: "block header names no layout, or its padding bits are not zero",
    -3: "Exp-Golomb prefix too long",
    -4: "output buffer too small",
    -5: "zero run past the end of the block",
    -6: "block header k out of range",
}
DENSE, SPARSE, RUNS = 0, 1, 2
HEADER_BITS = 14
"""A block starts with 14 header bits: layout (2), then k of x, y, z (4 each)."""
PLAN_SIZE = 14
"""Length of the ``plan`` array ``block_plan`` fills (5 entries, then scratch)."""

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63)


@_jit
def _unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


_BIT_LENGTH = np.array([int(v).bit_length() for v in range(256)], np.int64)


@_jit
def bit_length(v: int) -> int:
    n = 0
    while v >= 256:
        v >>= 8
        n += 8
    return n + _BIT_LENGTH[v]


@_jit
def eg_len(u: int, k: int) -> int:
    return 2 * bit_length((u >> k) + 1) - 1 + k


@_jit
def _best_k(values: np.ndarray, count: int, k_out: np.ndarray) -> int:
    """Per axis, a k minimising the Exp-Golomb size of values[:count]; returns the exact total bits.

    k is chosen from a histogram of bit lengths (the size of ``u`` with bit length b is about
    ``2 max(b - k, 0) + 1 + k``), then the exact size is computed for that k alone.
    """
    total = 0
    hist = np.zeros(48, np.int64)
    for a in range(3):
        hist[:] = 0
        top = 0
        for i in range(count):
            b = bit_length(values[i, a])
            hist[b] += 1
            if b > top:
                top = b
        best = -1
        best_k = 0
        for k in range(min(top, MAX_K) + 1):
            bits = 0
            for b in range(top + 1):
                if hist[b]:
                    bits += hist[b] * (2 * max(b - k, 0) + 1 + k)
            if best < 0 or bits < best:
                best = bits
                best_k = k
        k_out[a] = best_k
        exact = 0
        for i in range(count):
            exact += eg_len(values[i, a], best_k)
        total += exact
    return total


@_jit
def _runs_bits(u: np.ndarray, n: int, k_out: np.ndarray, runs: np.ndarray) -> int:
    """Exact size in bits of the runs layout of the zig-zagged residuals ``u[:n]``; picks k per axis
    into ``k_out[:3]``. ``runs`` (>= n,) int64 scratch."""
    total = 0
    for a in range(3):
        count = 0
        values = 0
        run = 0
        top = 0
        for i in range(n):
            v = u[i, a]
            if v == 0:
                run += 1
                continue
            runs[count] = run
            count += 1
            top = max(top, run)
            values += eg_len(v - 1, 0)
            run = 0
        if run:
            runs[count] = run
            count += 1
            top = max(top, run)
        best = -1
        best_k = 0
        for k in range(min(bit_length(top), MAX_K) + 1):
            bits = 0
            for r in range(count):
                bits += eg_len(runs[r], k)
            if best < 0 or bits < best:
                best = bits
                best_k = k
        k_out[a] = best_k
        total += values + best
    return total


@_jit
def block_bits(d: np.ndarray, dense_u: np.ndarray, sparse_u: np.ndarray, plan: np.ndarray) -> int:
    """Size in bits (header included) of the encoded block ``d`` (n, 3) int64, filling the scratch arrays
    and ``plan`` for ``block_put``.

    ``plan`` (PLAN_SIZE,) int64 receives [layout, kx, ky, kz, coded vertex count, scratch...];
    ``dense_u``/``sparse_u`` (n, 3) int64 scratch receive the zig-zagged residuals of the layouts.
    """
    n = d.shape[0]
    m = 0
    for a in range(3):
        dense_u[0, a] = _zigzag(d[0, a]) if n else 0
    for i in range(1, n):
        for a in range(3):
            dense_u[i, a] = _zigzag(d[i, a] - d[i - 1, a])
    for i in range(n):
        if d[i, 0] != 0 or d[i, 1] != 0 or d[i, 2] != 0:
            m += 1
    kd = plan[5:8]
    ks = plan[8:11]
    kr = plan[11:14]
    # every code is at least one bit: dense >= 3n bits, sparse >= n + 3m bits, so when the runs layout
    # is already that small the others need not be sized (the choice is still the smallest layout)
    layout = RUNS
    bits = _runs_bits(dense_u, n, kr, sparse_u[:, 0])
    if bits > 3 * n:
        dense_bits = _best_k(dense_u, n, kd)
        if dense_bits <= bits:
            layout = DENSE
            bits = dense_bits
    if bits > n + 3 * m:
        j = 0
        px = py = pz = 0
        for i in range(n):
            x, y, z = d[i, 0], d[i, 1], d[i, 2]
            if x != 0 or y != 0 or z != 0:
                sparse_u[j, 0] = _zigzag(x - px)
                sparse_u[j, 1] = _zigzag(y - py)
                sparse_u[j, 2] = _zigzag(z - pz)
                px, py, pz = x, y, z
                j += 1
        sparse_bits = n + _best_k(sparse_u, m, ks)
        if sparse_bits < bits:
            layout = SPARSE
            bits = sparse_bits
    plan[0] = layout
    if layout == SPARSE:
        plan[1], plan[2], plan[3] = ks[0], ks[1], ks[2]
        plan[4] = m
    elif layout == RUNS:
        plan[1], plan[2], plan[3] = kr[0], kr[1], kr[2]
        plan[4] = n
    else:
        plan[1], plan[2], plan[3] = kd[0], kd[1], kd[2]
        plan[4] = n
    return HEADER_BITS + bits


@_jit
def header_bits(plan: np.ndarray, prev: np.ndarray) -> int:
    """Bits of a block header written relative to the previous block's ``prev`` = [layout, kx, ky, kz]
    (see ``block_put``), instead of the fixed ``HEADER_BITS``."""
    bits = 1 if plan[0] == prev[0] else 3
    for a in range(3):
        bits += eg_len(_zigzag(plan[1 + a] - prev[1 + a]), 0)
    return bits


@_jit
def block_plan(d: np.ndarray, dense_u: np.ndarray, sparse_u: np.ndarray, plan: np.ndarray) -> int:
    """Size in bytes of the byte-aligned block ``d`` (see ``block_bits``)."""
    return (block_bits(d, dense_u, sparse_u, plan) + 7) // 8


@_jit
def put_bits(out: np.ndarray, pos: int, acc: int, nacc: int, value: int, nbits: int) -> tuple[int, int, int]:
    """Append the ``nbits`` (<= 32) low bits of ``value`` to the bit writer (pos, acc, nacc): ``acc``
    holds ``nacc`` < 8 pending bits, LSB-first. Returns the new state; pos -1 if ``out`` is full."""
    acc |= (value & ((1 << nbits) - 1)) << nacc
    nacc += nbits
    while nacc >= 8:
        if pos >= out.shape[0]:
            return -1, 0, 0
        out[pos] = acc & 0xFF
        acc >>= 8
        nacc -= 8
        pos += 1
    return pos, acc, nacc


@_jit
def put_eg(out: np.ndarray, pos: int, acc: int, nacc: int, u: int, k: int) -> tuple[int, int, int]:
    """Append the Exp-Golomb code of order ``k`` of ``u`` >= 0 to the bit writer (pos, acc, nacc):
    ``acc`` holds ``nacc`` < 8 pending bits (LSB-first). Returns the new state; pos -1 if ``out`` is full."""
    w = (u >> k) + 1
    z = bit_length(w) - 1
    # z zero bits and a one: the one lands z bits up
    nacc += z
    while nacc >= 8:  # whole zero bytes (acc's pending bits are below them)
        if pos >= out.shape[0]:
            return -1, 0, 0
        out[pos] = acc & 0xFF
        acc >>= 8
        nacc -= 8
        pos += 1
    acc |= 1 << nacc
    nacc += 1
    low = (w & ((1 << z) - 1)) | ((u & ((1 << k) - 1)) << z)
    left = z + k
    while True:
        t = min(left, 32)
        acc |= (low & ((1 << t) - 1)) << nacc
        nacc += t
        low >>= t
        left -= t
        while nacc >= 8:
            if pos >= out.shape[0]:
                return -1, 0, 0
            out[pos] = acc & 0xFF
            acc >>= 8
            nacc -= 8
            pos += 1
        if left <= 0:
            return pos, acc, nacc


@_jit
def block_put(
    d: np.ndarray,
    dense_u: np.ndarray,
    sparse_u: np.ndarray,
    plan: np.ndarray,
    out: np.ndarray,
    pos: int,
    acc: int,
    nacc: int,
    prev: np.ndarray,
) -> tuple[int, int, int]:
    """Append the block planned by ``block_bits`` to the bit writer (pos, acc, nacc); pos -1 if full.

    With ``prev[0] < 0`` the header is the fixed 14 bits; otherwise it is written relative to the previous
    block's ``prev`` = [layout, kx, ky, kz] (a same-layout bit, [2 layout bits], then per axis Exp-Golomb(0)
    of zigzag(k - previous k)), and ``prev`` becomes this block's.
    """
    n = d.shape[0]
    if prev[0] < 0:
        header = plan[0] | (plan[1] << 2) | (plan[2] << 6) | (plan[3] << 10)
        pos, acc, nacc = put_bits(out, pos, acc, nacc, header, HEADER_BITS)
    else:
        if plan[0] == prev[0]:
            pos, acc, nacc = put_bits(out, pos, acc, nacc, 1, 1)
        else:
            pos, acc, nacc = put_bits(out, pos, acc, nacc, plan[0] << 1, 3)
        for a in range(3):
            if pos >= 0:
                pos, acc, nacc = put_eg(out, pos, acc, nacc, _zigzag(plan[1 + a] - prev[1 + a]), 0)
        for a in range(4):
            prev[a] = plan[a]
    if pos < 0:
        return -1, 0, 0
    layout = plan[0]
    if layout == RUNS:
        for a in range(3):
            k = plan[1 + a]
            run = 0
            for i in range(n):
                u = dense_u[i, a]
                if u == 0:
                    run += 1
                    continue
                pos, acc, nacc = put_eg(out, pos, acc, nacc, run, k)
                if pos < 0:
                    return -1, 0, 0
                pos, acc, nacc = put_eg(out, pos, acc, nacc, u - 1, 0)
                if pos < 0:
                    return -1, 0, 0
                run = 0
            if run:
                pos, acc, nacc = put_eg(out, pos, acc, nacc, run, k)
                if pos < 0:
                    return -1, 0, 0
        return pos, acc, nacc
    if layout == SPARSE:
        for i in range(n):
            bit = 1 if (d[i, 0] != 0 or d[i, 1] != 0 or d[i, 2] != 0) else 0
            pos, acc, nacc = put_bits(out, pos, acc, nacc, bit, 1)
            if pos < 0:
                return -1, 0, 0
        values = sparse_u
    else:
        values = dense_u
    for i in range(plan[4]):
        for a in range(3):
            pos, acc, nacc = put_eg(out, pos, acc, nacc, values[i, a], plan[1 + a])
            if pos < 0:
                return -1, 0, 0
    return pos, acc, nacc


@_jit
def flush_bits(out: np.ndarray, pos: int, acc: int, nacc: int) -> int:
    """Write the pending bits padded with zeros to a whole byte; the next byte position, or -1 if full."""
    if nacc > 0:
        if pos >= out.shape[0]:
            return -1
        out[pos] = acc & 0xFF
        pos += 1
    return pos


@_jit
def block_write(
    d: np.ndarray, dense_u: np.ndarray, sparse_u: np.ndarray, plan: np.ndarray, out: np.ndarray, pos: int
) -> int:
    """Write the byte-aligned block planned by ``block_plan`` at ``out[pos:]``; the new position (or -4)."""
    pos, acc, nacc = block_put(d, dense_u, sparse_u, plan, out, pos, 0, 0, np.full(4, -1, np.int64))
    if pos >= 0:
        pos = flush_bits(out, pos, acc, nacc)
    return -4 if pos < 0 else pos


@_jit
def get_eg(buf: np.ndarray, bit: int, end_bit: int, k: int) -> tuple[int, int]:
    """(value, next bit) of an Exp-Golomb(k) code at ``bit``, or (error code, 0)."""
    z = 0
    while True:
        if bit >= end_bit:
            return -1, 0
        b = (buf[bit >> 3] >> (bit & 7)) & 1
        bit += 1
        if b:
            break
        z += 1
        if z > MAX_PREFIX:
            return -3, 0
    nlow = z + k
    if bit + nlow > end_bit:
        return -1, 0
    low = 0
    for j in range(nlow):
        low |= np.int64((buf[(bit + j) >> 3] >> ((bit + j) & 7)) & 1) << j
    bit += nlow
    w = (1 << z) | (low & ((1 << z) - 1))
    return ((w - 1) << k) | (low >> z), bit


@_jit
def get_bits(buf: np.ndarray, bit: int, end_bit: int, nbits: int) -> tuple[int, int]:
    """(value of the ``nbits`` bits at ``bit``, LSB-first; next bit), or (-1, 0) past ``end_bit``."""
    if bit + nbits > end_bit:
        return -1, 0
    v = 0
    for j in range(nbits):
        v |= np.int64((buf[(bit + j) >> 3] >> ((bit + j) & 7)) & 1) << j
    return v, bit + nbits


@_jit
def block_get(buf: np.ndarray, bit: int, end_bit: int, d: np.ndarray, prev: np.ndarray) -> int:
    """Decode a block of d.shape[0] vertices starting at bit ``bit`` of ``buf`` into ``d`` (n, 3) int64,
    reading no bit at or after ``end_bit``; the header is fixed or relative to ``prev`` as in
    ``block_put`` (``prev`` is updated). Returns the bit after the block, or a negative code from
    ``BLOCK_ERRORS``.
    """
    n = d.shape[0]
    if prev[0] < 0:
        header, bit = get_bits(buf, bit, end_bit, HEADER_BITS)
        if header < 0:
            return -1
        layout = header & 3
        ks = ((header >> 2) & 15, (header >> 6) & 15, (header >> 10) & 15)
    else:
        same, bit = get_bits(buf, bit, end_bit, 1)
        if same < 0:
            return -1
        layout = prev[0]
        if not same:
            layout, bit = get_bits(buf, bit, end_bit, 2)
            if layout < 0:
                return -1
        k3 = np.zeros(3, np.int64)
        for a in range(3):
            u, bit = get_eg(buf, bit, end_bit, 0)
            if u < 0:
                return u
            k3[a] = prev[1 + a] + _unzigzag(u)
            if k3[a] < 0 or k3[a] > MAX_K:
                return -6
        ks = (k3[0], k3[1], k3[2])
        prev[0] = layout
        prev[1], prev[2], prev[3] = k3[0], k3[1], k3[2]
    if layout == 3:
        return -2
    for i in range(n):
        d[i, 0] = 0
        d[i, 1] = 0
        d[i, 2] = 0
    if layout == RUNS:
        for a in range(3):
            k = ks[a]
            cur = 0
            i = 0
            while i < n:
                run, bit2 = get_eg(buf, bit, end_bit, k)
                if run < 0:
                    return run
                bit = bit2
                if run > n - i:
                    return -5
                for j in range(i, i + run):
                    d[j, a] = cur
                i += run
                if i == n:
                    break
                v, bit2 = get_eg(buf, bit, end_bit, 0)
                if v < 0:
                    return v
                bit = bit2
                cur += _unzigzag(v + 1)
                d[i, a] = cur
                i += 1
        return bit
    mask_start = bit
    if layout == SPARSE:
        if bit + n > end_bit:
            return -1
        bit += n
    px = py = pz = 0
    for i in range(n):
        if layout == SPARSE:
            mb = mask_start + i
            if not (buf[mb >> 3] >> (mb & 7)) & 1:
                continue
        for a in range(3):
            u, bit2 = get_eg(buf, bit, end_bit, ks[a])
            if u < 0:
                return u
            bit = bit2
            r = _unzigzag(u)
            if a == 0:
                px += r
                d[i, 0] = px
            elif a == 1:
                py += r
                d[i, 1] = py
            else:
                pz += r
                d[i, 2] = pz
    return bit


@_jit
def block_read(buf: np.ndarray, pos: int, end: int, d: np.ndarray) -> int:
    """Decode a byte-aligned block from ``buf[pos:end]`` into ``d``; the position after it (padding bits
    must be zero) or a negative code from ``BLOCK_ERRORS``."""
    bit = block_get(buf, pos * 8, end * 8, d, np.full(4, -1, np.int64))
    if bit < 0:
        return bit
    if bit & 7 and buf[bit >> 3] >> (bit & 7):
        return -2
    return (bit + 7) // 8


class BlockCoder:
    """Reusable scratch space for encoding blocks of up to ``max_vertices`` vertices."""

    def __init__(self, max_vertices: int) -> None:
        self.dense = np.zeros((max_vertices, 3), np.int64)
        self.sparse = np.zeros((max_vertices, 3), np.int64)
        self.plan = np.zeros(PLAN_SIZE, np.int64)

    def encode(self, d: np.ndarray) -> bytes:
        """The encoded block of an (n, 3) integer array."""
        d = np.ascontiguousarray(d, dtype=np.int64)
        n = len(d)
        size = block_plan(d, self.dense[:n], self.sparse[:n], self.plan)
        out = np.zeros(size, np.uint8)
        end = block_write(d, self.dense[:n], self.sparse[:n], self.plan, out, 0)
        assert end == size, (end, size)
        return out.tobytes()


def decode_block(data: bytes, n: int, pos: int = 0) -> tuple[np.ndarray, int]:
    """(values (n, 3) int64, end position) of a block in ``data``; ValueError if malformed."""
    d = np.zeros((n, 3), np.int64)
    end = block_read(np.frombuffer(data, np.uint8), pos, len(data), d)
    if end < 0:
        raise ValueError(BLOCK_ERRORS[end])
    return d, end
