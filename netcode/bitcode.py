"""Entropy coding of small integer blocks (a patch's per-vertex deltas) with Exp-Golomb codes, in numba.

A *block* is an (n, 3) array of integers (grid deltas against a baseline, or absolute grid coordinates).
Neighbouring vertices of a patch move alike, so the coder sends each coded vertex's difference from the
previous coded vertex (a spatial residual), zig-zag mapped to unsigned and written as an Exp-Golomb code
of order k, one k per axis chosen to minimise the size. Two layouts, whichever is smaller:

* dense: every vertex is coded;
* sparse: an n-bit mask says which vertices are coded; the others are zero (unchanged).

Wire layout of a block (byte-aligned at both ends)::

    u16 header   bit 0: sparse; bits 1-4, 5-8, 9-12: k of x, y, z; bits 13-15: zero
    [sparse: n mask bits, LSB-first]
    for each coded vertex, for x, y, z: zero bits (z of them), a one bit, then z + k value bits
    zero padding to the next byte

Bits are written LSB-first within bytes. Exact sizes are computed before anything is written, so the
caller can fit blocks to a byte budget without trial and error. Decoding checks every read against the
end of the buffer and returns a negative error code instead of raising (numba), see ``BLOCK_ERRORS``.
"""

from __future__ import annotations

import numba
import numpy as np

MAX_K = 15
MAX_PREFIX = 40
"""A prefix longer than this cannot come from our encoder (values are < 2^35): reject."""
BLOCK_ERRORS = {
    -1: "block runs past the end of the snapshot",
    -2: "block header has reserved bits set",
    -3: "Exp-Golomb prefix too long",
    -4: "output buffer too small",
}

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63)


@_jit
def _unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


@_jit
def _eg_len(u: int, k: int) -> int:
    w = (u >> k) + 1
    nb = 0
    while w:
        nb += 1
        w >>= 1
    return 2 * nb - 1 + k


@_jit
def _bit_length(v: int) -> int:
    n = 0
    while v:
        n += 1
        v >>= 1
    return n


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
            b = _bit_length(values[i, a])
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
            exact += _eg_len(values[i, a], best_k)
        total += exact
    return total


@_jit
def block_plan(d: np.ndarray, dense_u: np.ndarray, sparse_u: np.ndarray, plan: np.ndarray) -> int:
    """Size in bytes of the encoded block ``d`` (n, 3) int64, filling the scratch arrays and ``plan``.

    ``plan`` (5,) int64 receives [sparse flag, kx, ky, kz, coded vertex count]; ``dense_u``/``sparse_u``
    (n, 3) uint-valued int64 scratch receive the zig-zagged residuals of both layouts.
    """
    n = d.shape[0]
    m = 0
    px = py = pz = 0
    for i in range(n):
        x, y, z = d[i, 0], d[i, 1], d[i, 2]
        if i == 0:
            dense_u[i, 0] = _zigzag(x)
            dense_u[i, 1] = _zigzag(y)
            dense_u[i, 2] = _zigzag(z)
        else:
            dense_u[i, 0] = _zigzag(x - d[i - 1, 0])
            dense_u[i, 1] = _zigzag(y - d[i - 1, 1])
            dense_u[i, 2] = _zigzag(z - d[i - 1, 2])
        if x != 0 or y != 0 or z != 0:
            sparse_u[m, 0] = _zigzag(x - px)
            sparse_u[m, 1] = _zigzag(y - py)
            sparse_u[m, 2] = _zigzag(z - pz)
            px, py, pz = x, y, z
            m += 1
    kd = np.zeros(3, np.int64)
    ks = np.zeros(3, np.int64)
    dense_bits = _best_k(dense_u, n, kd)
    # the sparse layout costs n mask bits plus at least 3 bits per coded vertex: skip it when hopeless
    sparse_bits = n + _best_k(sparse_u, m, ks) if n + 3 * m < dense_bits else dense_bits + 1
    if sparse_bits < dense_bits:
        plan[0] = 1
        plan[1], plan[2], plan[3] = ks[0], ks[1], ks[2]
        plan[4] = m
        return 2 + (sparse_bits + 7) // 8
    plan[0] = 0
    plan[1], plan[2], plan[3] = kd[0], kd[1], kd[2]
    plan[4] = n
    return 2 + (dense_bits + 7) // 8


@_jit
def block_write(
    d: np.ndarray, dense_u: np.ndarray, sparse_u: np.ndarray, plan: np.ndarray, out: np.ndarray, pos: int
) -> int:
    """Write the block planned by ``block_plan`` at ``out[pos:]``; returns the new position (or -4)."""
    n = d.shape[0]
    header = plan[0] | (plan[1] << 1) | (plan[2] << 5) | (plan[3] << 9)
    if pos + 2 > out.shape[0]:
        return -4
    out[pos] = header & 0xFF
    out[pos + 1] = header >> 8
    pos += 2
    acc = 0
    nacc = 0
    if plan[0] == 1:
        for i in range(n):
            bit = 1 if (d[i, 0] != 0 or d[i, 1] != 0 or d[i, 2] != 0) else 0
            acc |= bit << nacc
            nacc += 1
            if nacc == 32:
                if pos + 4 > out.shape[0]:
                    return -4
                for _ in range(4):
                    out[pos] = acc & 0xFF
                    acc >>= 8
                    pos += 1
                nacc = 0
        values = sparse_u
    else:
        values = dense_u
    count = plan[4]
    for i in range(count):
        for a in range(3):
            k = plan[1 + a]
            u = values[i, a]
            w = (u >> k) + 1
            nb = 0
            t = w
            while t:
                nb += 1
                t >>= 1
            z = nb - 1
            # z zeros, a one, the low z bits of w, then the k low bits of u (LSB-first)
            low = (w & ((1 << z) - 1)) | ((u & ((1 << k) - 1)) << z)
            nbits = 2 * z + 1 + k
            if nbits <= 48:
                acc |= ((1 << z) | (low << (z + 1))) << nacc
                nacc += nbits
            else:
                pieces_v0 = 1 << z
                pieces_n0 = z + 1
                nlow = z + k
                for piece in range(2):
                    pv = pieces_v0 if piece == 0 else low
                    pn = pieces_n0 if piece == 0 else nlow
                    while pn > 0:
                        take = pn if pn < 24 else 24
                        acc |= (pv & ((1 << take) - 1)) << nacc
                        nacc += take
                        pv >>= take
                        pn -= take
                        while nacc >= 8:
                            if pos >= out.shape[0]:
                                return -4
                            out[pos] = acc & 0xFF
                            acc >>= 8
                            nacc -= 8
                            pos += 1
            while nacc >= 8:
                if pos >= out.shape[0]:
                    return -4
                out[pos] = acc & 0xFF
                acc >>= 8
                nacc -= 8
                pos += 1
    while nacc > 0:
        if pos >= out.shape[0]:
            return -4
        out[pos] = acc & 0xFF
        acc >>= 8
        nacc = nacc - 8 if nacc > 8 else 0
        pos += 1
    return pos


@_jit
def block_read(buf: np.ndarray, pos: int, end: int, d: np.ndarray) -> int:
    """Decode a block of d.shape[0] vertices from ``buf[pos:end]`` into ``d`` (n, 3) int64.

    Returns the position after the block, or a negative code from ``BLOCK_ERRORS``.
    """
    n = d.shape[0]
    if pos + 2 > end:
        return -1
    header = buf[pos] | (buf[pos + 1] << 8)
    if header >> 13:
        return -2
    sparse = header & 1
    k0 = (header >> 1) & 15
    k1 = (header >> 5) & 15
    k2 = (header >> 9) & 15
    bit = (pos + 2) * 8
    end_bit = end * 8
    for i in range(n):
        d[i, 0] = 0
        d[i, 1] = 0
        d[i, 2] = 0
    mask_start = bit
    if sparse:
        if bit + n > end_bit:
            return -1
        bit += n
    px = py = pz = 0
    for i in range(n):
        if sparse:
            mb = mask_start + i
            if not (buf[mb >> 3] >> (mb & 7)) & 1:
                continue
        for a in range(3):
            k = k0 if a == 0 else (k1 if a == 1 else k2)
            z = 0
            while True:
                if bit >= end_bit:
                    return -1
                b = (buf[bit >> 3] >> (bit & 7)) & 1
                bit += 1
                if b:
                    break
                z += 1
                if z > MAX_PREFIX:
                    return -3
            nlow = z + k
            if bit + nlow > end_bit:
                return -1
            low = 0
            for j in range(nlow):
                low |= ((buf[(bit + j) >> 3] >> ((bit + j) & 7)) & 1) << j
            bit += nlow
            w = (1 << z) | (low & ((1 << z) - 1))
            u = ((w - 1) << k) | (low >> z)
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
    return (bit + 7) // 8


class BlockCoder:
    """Reusable scratch space for encoding blocks of up to ``max_vertices`` vertices."""

    def __init__(self, max_vertices: int) -> None:
        self.dense = np.zeros((max_vertices, 3), np.int64)
        self.sparse = np.zeros((max_vertices, 3), np.int64)
        self.plan = np.zeros(5, np.int64)

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
