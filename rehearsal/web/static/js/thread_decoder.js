// The suture thread's decoder (SNAPSHOT.md section 6): a port of netcode/sync/thread_polyline.py's
// ThreadDecoder, beside the snapshot decoder. A `snap_thread` message's `data` is one frame of the thread as
// a quantized polyline (full, or a delta against a version the client holds); `snap_suture` says which rigid
// object is the needle and how to draw it and the thread.
//
//   const thread = new ThreadDecoder(snapshotDecoder.config);   // the snapshot's grid: {origin, step}
//   thread.apply(bytes) -> true (the newest thread now) | false (an older or duplicate frame); throws
//                          ThreadError (state unchanged), ThreadBaselineError when a delta's baseline is not
//                          held (send snap_resync, then reset())
//   thread.points() -> Float64Array (3 per point, metres: origin + q * step, as Python's)
//   thread.grid() -> Int32Array, thread.count, thread.sequence, thread.time
//   thread.ackFields() -> {newest, bits} | null  (thread_ack; over a WebSocket not needed: written = held)
//
// Several threads (a tied stitch's piece cut off the thread stays in the tissue): `snap_thread.thread` names
// which (absent: 0, the live thread on the needle); a ThreadSet keeps a ThreadDecoder per id, at most
// MAX_THREADS (thread_polyline.py's ThreadSet):
//   const threads = new ThreadSet(config); threads.apply(fields.thread, fields.data); threads.points() -> Map

import { BitError, BitReader, blockGet, unzigzag } from "./bitcode.js";

export const THREAD_VERSION = 1;
export const MAX_POINTS = 4096;
export const MAX_THREAD_BYTES = 64 * 1024;
export const MAX_VERSIONS = 32;
export const ACK_BITS = 32;
export const MAX_THREADS = 16; // thread ids 0 .. 15 (thread_polyline.py MAX_THREADS)
const INT32_LIMIT = 2 ** 31 - 1;

export class ThreadError extends Error {
  constructor(message) {
    super(message);
    this.name = "ThreadError";
  }
}

export class ThreadBaselineError extends ThreadError {
  constructor(message) {
    super(message);
    this.name = "ThreadBaselineError";
  }
}

function readVarint(data, pos, end, what) {
  let value = 0;
  for (let i = 0; i < 5; i++) {
    if (pos >= end) throw new ThreadError(`truncated varint (${what}) at byte ${pos}`);
    const b = data[pos++];
    value += (b & 0x7f) * 2 ** (7 * i);
    if (!(b & 0x80)) return [value, pos];
  }
  throw new ThreadError(`varint (${what}) longer than 5 bytes at byte ${pos}`);
}

/** {sequence, time, age, count, end} of a snap_thread payload (thread_polyline.read_thread_header). */
export function readThreadHeader(data) {
  if (!(data instanceof Uint8Array)) throw new ThreadError("thread data must be bytes");
  if (!data.length) throw new ThreadError("empty thread message");
  if (data[0] !== THREAD_VERSION) {
    throw new ThreadError(`thread message version ${data[0]} (this decoder reads ${THREAD_VERSION})`);
  }
  if (data.length > MAX_THREAD_BYTES) throw new ThreadError(`thread message of ${data.length} bytes`);
  const end = data.length;
  let [sequence, pos] = readVarint(data, 1, end, "thread sequence");
  if (pos + 8 > end) throw new ThreadError("thread message shorter than its header");
  const time = new DataView(data.buffer, data.byteOffset, data.byteLength).getFloat64(pos, true);
  let age;
  let count;
  [age, pos] = readVarint(data, pos + 8, end, "thread age");
  [count, pos] = readVarint(data, pos, end, "thread point count");
  if (sequence > 0xffffffff || sequence < 1) throw new ThreadError(`thread sequence ${sequence} out of range`);
  if (!Number.isFinite(time)) throw new ThreadError("thread time is not finite");
  if (age > sequence) throw new ThreadError(`thread age ${age} beyond its sequence ${sequence}`);
  if (count > MAX_POINTS) throw new ThreadError(`thread of ${count} points (at most ${MAX_POINTS})`);
  return { sequence, time, age, count, end: pos };
}

function block(data, pos, d, n) {
  const r = new BitReader(data, pos * 8, data.length * 8);
  try {
    blockGet(r, d, 0, n, [-1, 0, 0, 0]);
  } catch (exc) {
    if (exc instanceof BitError) throw new ThreadError(`thread block: ${exc.message}`);
    throw exc;
  }
  if (!r.paddingIsZero()) throw new ThreadError("thread block: block header names no layout, or its padding bits are not zero");
  return (r.bit + 7) >> 3;
}

/** The grid values (Float64Array, 3 per point: exact integers) of a payload whose header was read. */
export function unpackThread(data, header, base) {
  const n = header.count;
  const end = data.length;
  let pos = header.end;
  const q = new Float64Array(3 * n);
  if (n && header.age === 0) {
    for (let a = 0; a < 3; a++) {
      let u;
      [u, pos] = readVarint(data, pos, end, "thread first point");
      q[a] = unzigzag(u);
    }
    if (n >= 2) {
      const seg = new Float64Array(3 * (n - 1));
      pos = block(data, pos, seg, n - 1);
      for (let i = 1; i < n; i++) for (let a = 0; a < 3; a++) q[3 * i + a] = q[3 * (i - 1) + a] + seg[3 * (i - 1) + a];
    }
  } else if (n) {
    if (!base) throw new ThreadBaselineError("thread delta without a baseline");
    pos = block(data, pos, q, n);
    const m = base.length / 3;
    for (let i = 0; i < n; i++) {
      const j = m === 0 ? -1 : Math.min(i, m - 1);
      if (j >= 0) for (let a = 0; a < 3; a++) q[3 * i + a] += base[3 * j + a];
    }
  }
  if (pos !== end) throw new ThreadError(`${end - pos} bytes after the thread's points`);
  for (let i = 0; i < q.length; i++) {
    if (Math.abs(q[i]) > INT32_LIMIT) throw new ThreadError("thread grid coordinate beyond int32");
  }
  return q;
}

/** A client's copy of the suture thread (see the module comment). */
export class ThreadDecoder {
  constructor(config = null, maxVersions = MAX_VERSIONS) {
    this.config = config;
    this.maxVersions = maxVersions;
    this.rejected = 0;
    this.missingBaselines = 0;
    this.reset();
  }

  /** Forget every version (after asking the server to resync). */
  reset() {
    this._versions = new Map(); // sequence -> Float64Array grid values (insertion order = arrival)
    this._applied = [];
    this.sequence = null;
    this.time = NaN;
    this._q = new Float64Array(0);
  }

  get count() {
    return this._q.length / 3;
  }

  grid() {
    return Int32Array.from(this._q);
  }

  /** The newest thread in metres (origin + q * step per axis, float64 as Python's dequantize). */
  points() {
    const out = new Float64Array(this._q.length);
    if (!this.config) return out;
    const { origin, step } = this.config;
    for (let i = 0; i < out.length; i++) out[i] = origin[i % 3] + this._q[i] * step;
    return out;
  }

  apply(data) {
    let header;
    let q;
    try {
      header = readThreadHeader(data);
      if (this._versions.has(header.sequence)) return false;
      let base = null;
      if (header.age) {
        base = this._versions.get(header.sequence - header.age) ?? null;
        if (!base) {
          this.missingBaselines += 1;
          throw new ThreadBaselineError(`thread delta against frame ${header.sequence - header.age}, which is not held`);
        }
      }
      q = unpackThread(data, header, base);
    } catch (exc) {
      if (exc instanceof ThreadError) this.rejected += 1;
      throw exc;
    }
    const seq = header.sequence;
    this._versions.set(seq, q);
    if (header.age) {
      for (const s of [...this._versions.keys()]) if (s < seq - header.age) this._versions.delete(s);
    }
    while (this._versions.size > this.maxVersions) this._versions.delete(this._versions.keys().next().value);
    this._applied.push(seq);
    if (this._applied.length > ACK_BITS + 1) this._applied.splice(0, this._applied.length - (ACK_BITS + 1));
    if (this.sequence !== null && seq < this.sequence) return false;
    this.sequence = seq;
    this.time = header.time;
    this._q = q;
    return true;
  }

  ackFields() {
    if (!this._applied.length) return null;
    const newest = Math.max(...this._applied);
    let bits = 0;
    for (const s of this._applied) {
      if (newest - s > 0 && newest - s <= ACK_BITS) bits = (bits + 2 ** (newest - s - 1)) % 2 ** 32;
    }
    return { newest, bits };
  }
}

/** A message's `thread` field as an id (absent or null: 0); ThreadError unless an integer 0 .. MAX_THREADS - 1. */
export function threadId(value) {
  if (value === undefined || value === null) return 0;
  if (!Number.isInteger(value) || value < 0 || value >= MAX_THREADS) {
    throw new ThreadError(`thread id ${value} (0 .. ${MAX_THREADS - 1})`);
  }
  return value;
}

/** A client's threads by id, a ThreadDecoder each (bounded: ids are 0 .. MAX_THREADS - 1). */
export class ThreadSet {
  constructor(config = null) {
    this.config = config;
    this.decoders = new Map();
  }

  decoder(id = 0) {
    const key = threadId(id);
    let dec = this.decoders.get(key);
    if (!dec) {
      dec = new ThreadDecoder(this.config);
      this.decoders.set(key, dec);
    }
    return dec;
  }

  /** One snap_thread payload into its thread's decoder (ThreadDecoder.apply; ThreadError for a bad id). */
  apply(id, data) {
    return this.decoder(id).apply(data);
  }

  /** Forget every thread (a new suture stream: snap_suture, or a resync). */
  reset() {
    this.decoders.clear();
  }

  /** Every thread's newest points (Float64Array, 3 per point) by id, ascending, the empty ones left out. */
  points() {
    const out = new Map();
    for (const id of [...this.decoders.keys()].sort((a, b) => a - b)) {
      const p = this.decoders.get(id).points();
      if (p.length) out.set(id, p);
    }
    return out;
  }
}

/** snap_suture fields -> {needle, radius, arc, wireRadius, threadRadius}; ThreadError for a shape not drawable. */
export function parseSuture(f) {
  const values = [f.radius, f.arc, f.wire_radius, f.thread_radius];
  if (!Number.isInteger(f.needle) || !values.every((v) => Number.isFinite(v) && v > 0 && v < 10)) {
    throw new ThreadError("snap_suture: a needle id and finite positive radius, arc and radii are needed");
  }
  return Object.freeze({ needle: f.needle, radius: f.radius, arc: f.arc, wireRadius: f.wire_radius, threadRadius: f.thread_radius });
}

/** Points (Float64Array, 3 each) along the needle's arc, tail to tip, at its pose (rotation x, y, z, w). */
export function needlePoints(suture, position, rotation, n = 24) {
  const [x, y, z, w] = rotation;
  const m = [
    1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
    2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
    2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
  ];
  const out = new Float64Array(3 * n);
  for (let i = 0; i < n; i++) {
    const t = (suture.arc * i) / (n - 1);
    const lx = suture.radius * Math.cos(t);
    const ly = suture.radius * Math.sin(t);
    for (let a = 0; a < 3; a++) out[3 * i + a] = position[a] + m[3 * a] * lx + m[3 * a + 1] * ly;
  }
  return out;
}
