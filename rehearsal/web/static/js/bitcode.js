// Bit streams of snapshot records and the tissue block coder (SNAPSHOT.md 2, 2.2): a port of the reading half
// of netcode/sync/bitcode.py (get_bits, get_eg, block_get) and of snapshot.py's BitReader.
//
// Bits are read LSB-first within each byte. Exp-Golomb(k) of u: z zero bits, a one bit, then z + k bits
// `low`; a prefix of more than 40 zeros is invalid. Reads never pass `endBit`; a failure throws a BitError
// whose `code` is the Python decoder's (BLOCK_ERRORS below). Values are exact up to 2^53 (a valid snapshot
// has none above 2^35; larger ones only occur in streams that the int32 range checks then reject).

export const MAX_PREFIX = 40;
export const MAX_K = 15;
export const DENSE = 0;
export const SPARSE = 1;
export const RUNS = 2;
export const HEADER_BITS = 14;

export const BLOCK_ERRORS = Object.freeze({
  [-1]: "block runs past the end of the snapshot",
  [-2]: "block header names no layout, or its padding bits are not zero",
  [-3]: "Exp-Golomb prefix too long",
  [-5]: "zero run past the end of the block",
  [-6]: "block header k out of range",
});

export class BitError extends Error {
  constructor(code) {
    super(BLOCK_ERRORS[code] ?? `bit stream error ${code}`);
    this.name = "BitError";
    this.code = code;
  }
}

const POW2 = Array.from({ length: 64 }, (_, i) => 2 ** i);

export function unzigzag(u) {
  // (u >> 1) ^ -(u & 1) for 0 <= u < 2^53 (no 32-bit operators: u may exceed them)
  const half = Math.floor(u / 2);
  return u % 2 ? -half - 1 : half;
}

/** A position in a byte array's bit stream (LSB-first), bounded by `endBit`. */
export class BitReader {
  constructor(buf, bit, endBit) {
    this.buf = buf;
    this.bit = bit;
    this.endBit = endBit;
  }

  /** The next `n` bits (0 <= n <= 24) as an unsigned integer. */
  small(n) {
    const bit = this.bit;
    if (bit + n > this.endBit) throw new BitError(-1);
    if (n === 0) return 0;
    const buf = this.buf;
    let i = bit >> 3;
    let got = 8 - (bit & 7);
    let v = buf[i++] >> (bit & 7);
    while (got < n) {
      v |= buf[i++] << got;
      got += 8;
    }
    this.bit = bit + n;
    return n === 24 ? v & 0xffffff : v & ((1 << n) - 1);
  }

  /** The next `n` bits (0 <= n <= 60) as a Number (exact up to 2^53). */
  bits(n) {
    if (n <= 24) return this.small(n);
    if (this.bit + n > this.endBit) throw new BitError(-1);
    let value = 0;
    let scale = 1;
    while (n > 0) {
      const t = Math.min(n, 24);
      value += this.small(t) * scale;
      scale *= POW2[t];
      n -= t;
    }
    return value;
  }

  /** Exp-Golomb code of order k. */
  eg(k) {
    const buf = this.buf;
    const end = this.endBit;
    let bit = this.bit;
    let z = 0;
    for (;;) {
      if (bit >= end) throw new BitError(-1);
      const sh = bit & 7;
      const avail = Math.min(8 - sh, end - bit);
      const window = (buf[bit >> 3] >> sh) & ((1 << avail) - 1);
      if (window) {
        const zeros = 31 - Math.clz32(window & -window);
        z += zeros;
        bit += zeros;
        break;
      }
      z += avail;
      bit += avail;
      if (z > MAX_PREFIX) throw new BitError(-3);
    }
    if (z > MAX_PREFIX) throw new BitError(-3);
    this.bit = bit + 1;
    const nlow = z + k;
    if (this.bit + nlow > end) throw new BitError(-1);
    if (nlow <= 24) {
      const low = this.small(nlow);
      const w = (1 << z) | (low & ((1 << z) - 1));
      return (w - 1) * POW2[k] + (low >>> z);
    }
    const low = this.bits(nlow);
    const zp = POW2[z];
    const w = zp + (low % zp);
    return (w - 1) * POW2[k] + Math.floor(low / zp);
  }

  /** Whether the bits from here to the next byte boundary are all zero (stream padding). */
  paddingIsZero() {
    const bit = this.bit;
    if (!(bit & 7)) return true;
    return this.buf[bit >> 3] >> (bit & 7) === 0;
  }
}

/**
 * Decode one block of `n` vertices into rows `d[off .. off + 3n)` (x, y, z per vertex), with the header
 * relative to `prev` = [layout, kx, ky, kz] (updated), or the fixed 14-bit header when prev[0] < 0.
 * Throws BitError. (A value that is not exact here is far beyond int32: the caller's range check rejects it.)
 */
export function blockGet(r, d, off, n, prev) {
  let layout;
  let kx;
  let ky;
  let kz;
  if (prev[0] < 0) {
    const header = r.small(HEADER_BITS);
    layout = header & 3;
    kx = (header >> 2) & 15;
    ky = (header >> 6) & 15;
    kz = (header >> 10) & 15;
  } else {
    layout = prev[0];
    if (!r.small(1)) layout = r.small(2);
    const ks = [0, 0, 0];
    for (let a = 0; a < 3; a++) {
      const k = prev[1 + a] + unzigzag(r.eg(0));
      if (k < 0 || k > MAX_K) throw new BitError(-6);
      ks[a] = k;
    }
    [kx, ky, kz] = ks;
    prev[0] = layout;
    prev[1] = kx;
    prev[2] = ky;
    prev[3] = kz;
  }
  if (layout === 3) throw new BitError(-2);
  const end = off + 3 * n;
  d.fill(0, off, end);
  if (layout === RUNS) {
    const ks = [kx, ky, kz];
    for (let a = 0; a < 3; a++) {
      const k = ks[a];
      let cur = 0;
      let i = 0;
      while (i < n) {
        const run = r.eg(k);
        if (run > n - i) throw new BitError(-5);
        for (let j = i; j < i + run; j++) d[off + 3 * j + a] = cur;
        i += run;
        if (i === n) break;
        cur += unzigzag(r.eg(0) + 1);
        d[off + 3 * i + a] = cur;
        i += 1;
      }
    }
    return;
  }
  const maskStart = r.bit;
  if (layout === SPARSE) {
    if (r.bit + n > r.endBit) throw new BitError(-1);
    r.bit += n;
  }
  const buf = r.buf;
  let px = 0;
  let py = 0;
  let pz = 0;
  for (let i = 0; i < n; i++) {
    if (layout === SPARSE) {
      const mb = maskStart + i;
      if (!((buf[mb >> 3] >> (mb & 7)) & 1)) continue;
    }
    px += unzigzag(r.eg(kx));
    py += unzigzag(r.eg(ky));
    pz += unzigzag(r.eg(kz));
    const o = off + 3 * i;
    d[o] = px;
    d[o + 1] = py;
    d[o + 2] = pz;
  }
}
