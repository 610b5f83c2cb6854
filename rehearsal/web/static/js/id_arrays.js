// The integer arrays of state-sync messages (SNAPSHOT.md 1 and 2.3): a port of snapshot_messages.unpack_ids
// and motion_predictor.unpack_gains. Both are zlib-compressed little-endian int32, each value stored as the
// difference from the previous one (gains: from the same component of the previous vertex). The inflated
// size is bounded before inflating; truncated streams, a bad check value and bytes after the stream are
// refused, exactly as Python's zlib.decompressobj is used there.

import { ZStream, zlibInflate, zlibInflateEnd, zlibInflateInit2, Z_STREAM_END, Z_SYNC_FLUSH } from "../vendor/pako/pako.mjs";

export const MAX_ARRAY_ITEMS = 4_000_000; // largest id array inflated (16 MB of int32)
export const GAIN_LIMIT = 32767;
const CHUNK = 64 * 1024;

export class ArrayError extends Error {
  constructor(message) {
    super(message);
    this.name = "ArrayError";
  }
}

/** The inflated bytes of a zlib stream, at most `maxBytes`; ArrayError when truncated, too large or junk-tailed. */
export function inflateBounded(data, maxBytes, what) {
  const strm = new ZStream();
  zlibInflateInit2(strm, 15);
  strm.input = data;
  strm.next_in = 0;
  strm.avail_in = data.length;
  const chunks = [];
  let total = 0;
  let status = 0;
  let ended = false;
  for (;;) {
    const room = Math.min(CHUNK, maxBytes - total);
    if (room === 0) break; // at the limit and not ended: more output (or the trailer) would follow
    strm.output = new Uint8Array(room);
    strm.next_out = 0;
    strm.avail_out = room;
    status = zlibInflate(strm, Z_SYNC_FLUSH);
    const produced = room - strm.avail_out;
    if (produced) chunks.push(produced === room ? strm.output : strm.output.subarray(0, produced));
    total += produced;
    if (status === Z_STREAM_END) {
      ended = true;
      break;
    }
    if (status < 0 || status === 2) {
      zlibInflateEnd(strm);
      throw new ArrayError(`${what}: bad compressed array (${strm.msg || `zlib status ${status}`})`);
    }
    if (strm.avail_out > 0) break; // all input consumed without reaching the end of the stream
  }
  const junk = strm.avail_in > 0;
  zlibInflateEnd(strm);
  if (!ended || junk) throw new ArrayError(`${what}: compressed array is truncated, too large or followed by junk`);
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Inverse of Python's pack_ids: an Int32Array of ids in 0..2^31-1 (a multiple of `width` long). */
export function unpackIds(data, what, width = 1) {
  const raw = inflateBounded(data, MAX_ARRAY_ITEMS * 4, what);
  if (raw.length % 4) throw new ArrayError(`${what}: ${raw.length} bytes is not a whole number of int32`);
  const n = raw.length / 4;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Int32Array(n);
  let sum = 0; // exact: at most 4e6 values of |v| < 2^31 stay below 2^53
  let ok = true;
  for (let i = 0; i < n; i++) {
    sum += view.getInt32(4 * i, true);
    if (sum < 0 || sum > 2147483647) ok = false;
    out[i] = sum;
  }
  if (!ok) throw new ArrayError(`${what}: ids out of range`);
  if (width > 1 && n % width) throw new ArrayError(`${what}: ${n} values is not a multiple of ${width}`);
  return out;
}

/** Inverse of Python's pack_gains for `k` vertices: Int32Array (k * 9, row-major 3x3 per vertex). */
export function unpackGains(data, k) {
  const want = k * 9 * 4;
  let raw;
  try {
    raw = inflateBounded(data, want + 1, "gains");
  } catch (exc) {
    if (exc instanceof ArrayError && exc.message.startsWith("gains: bad")) throw exc;
    throw new ArrayError(`gains: expected ${want} bytes for ${k} vertices`);
  }
  if (raw.length !== want) throw new ArrayError(`gains: expected ${want} bytes for ${k} vertices`);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Int32Array(k * 9);
  const sums = new Float64Array(9);
  let ok = true;
  for (let v = 0; v < k; v++) {
    for (let c = 0; c < 9; c++) {
      sums[c] += view.getInt32(4 * (9 * v + c), true);
      if (Math.abs(sums[c]) > GAIN_LIMIT) ok = false;
      out[9 * v + c] = sums[c];
    }
  }
  if (!ok) throw new ArrayError(`gains beyond +-${GAIN_LIMIT}`);
  return out;
}
