// Client side of state sync (netcode/sync/SNAPSHOT.md), a port of netcode/sync/snapshot_decode.py's
// SnapshotDecoder with what it needs of snapshot.py, quantize.py, patches.py (carry maps),
// motion_predictor.py (prediction fields) and snapshot_messages.py. Decoding the same messages gives the
// same state as the Python decoder, to the bit (tests/rehearsal/web/test_decoder_conformance.py).
//
// API (what a page codes against):
//
//   import { SnapshotDecoder, SnapshotError } from "./snapshot_decoder.js";
//   const decoder = new SnapshotDecoder({ maxHeld: 8, maxVersions: 32 });
//
//   decoder.onMessage(type, fields) -> number[]
//       Feed one snap_config / snap_topology / snap_predictor / snapshot message, fields as
//       messages.js' decodeMessage gives them (they are validated again). Returns the sequences of the
//       snapshots applied by this message: the snapshot itself, or the held snapshots a topology or
//       predictor message made applicable. A snapshot of a newer epoch (or naming a predictor not received
//       yet) is held (the newest `maxHeld`), one of an older epoch is dropped: both return [] and are not
//       errors (`heldCount`, `dropped`). Bad input throws SnapshotError and leaves the state unchanged
//       (only the counters `rejected` and `missingBaselines` move). Other message types throw SnapshotError.
//   decoder.onBytes(bytes) -> number[]          decodeMessage + onMessage (MessageError becomes SnapshotError)
//
//   decoder.surface() -> {ids, positions, received}
//       ids: Int32Array of mesh vertex ids in layout order; positions: Float32Array, 3 per vertex, metres
//       (grid value + the newest snapshot's predicted motion); received: Uint8Array, 1 where the vertex's
//       patch was received in this epoch. The arrays are replaced (new objects) whenever the surface
//       changes, never modified in place: keep or compare them freely, do not write to them.
//   decoder.surfaceFloat64() -> Float64Array    the same positions before rounding to float32 (a copy)
//   decoder.surfaceGrid() -> Int32Array         decoded grid values, 3 per vertex, before prediction (a copy)
//   decoder.triangles() -> Int32Array           current surface triangles, mesh vertex ids, 3 per triangle
//                                               (the same object until a topology message replaces it)
//   decoder.triangleRows() -> Int32Array        the same as indices into surface() (for an index buffer);
//                                               triangles with a vertex outside the layout are left out
//   decoder.rigid() -> Map<objectId, {kind, position: [x, y, z], rotation: [x, y, z, w], jaw, sequence}>
//       newest version of every rigid object; kind "instrument" | "jaw" | "head" | "hand" | "other" | "needle";
//       jaw in radians or null; sequence = the snapshot it came from.
//   decoder.ackFields() -> {newest, bits} | null   the snap_ack fields (null before any snapshot applied)
//   decoder.missingBaselines                    a count that grows when a delta's baseline is missing: when
//                                               it grows, send snap_resync (its `reason` field is required)
//   decoder.epoch                               topology epoch (null before the first snap_topology)
//   decoder.newestSequence, decoder.serverTime  newest applied snapshot's sequence and server time (s)
//   decoder.config ({maxError, origin, step, rotationBits, jaw: {lo, hi, bits}}), decoder.layout
//   ({vertexIds, offsets, patchCount, vertexCount}), decoder.topology ({epoch, cause, instrument}),
//   decoder.predictors (ids held, ascending)
//   decoder.rejected, decoder.heldCount, decoder.dropped   counters
//
// Numbers: every position is computed in float64 with Python's operations in Python's order
// (origin + q * step, then + P * (step / 16)), so surfaceFloat64() equals Python's surface() exactly.
// Triangles are kept as a set keyed by their three vertex ids (physics compares them so): a topology
// message with cause "full" replaces them with added_triangles, any other adds added_triangles, then
// removes removed_triangles (physics only removes tets, so a triangle one change adds and a later change
// of the same message removes must end up removed).
// Like Python's, this decoder drops a patch's or rigid object's versions older than the baseline a snapshot
// used (a patch delta's fallback), so a snapshot that arrives after a newer one (reordered) can miss its
// baseline and be rejected. A patch delta against an optimistic base it does not hold (SNAPSHOT.md 2.2) is
// shown on what the patch shows (decoder.approximate: patch id -> first such sequence) and not stored, and the
// snapshot that was its base is never applied afterwards (decoder.lateDropped counts those).

import { BitError, BitReader, BLOCK_ERRORS, blockGet, RUNS, unzigzag } from "./bitcode.js";
import { ArrayError, unpackGains, unpackIds } from "./id_arrays.js";
import { decodeMessage, MessageError, SNAPSHOT_REGISTRY } from "./messages.js";

export const SNAPSHOT_VERSION = 4;
export const RECORD_PATCH = 1;
export const RECORD_RIGID = 2;
export const RECORD_DRIVE = 3;
export const MAX_RECORDS = 0xffff;
export const MAX_OBJECT_ID = 0xffff;
export const MAX_DRIVES = 64;
export const MAX_DRIVE = 2 ** 24;
export const MAX_PATCH_SIZE = 1024;
export const MAX_PREDICTORS = 8;
export const MAX_PREDICTOR_VERTICES = 4096;
export const MAX_PREDICTOR_ID = 0xffffffff;
export const FINE = 16;
export const GAIN_SHIFT = 12;
export const INT32_LIMIT = 2 ** 31 - 1;
export const DEFAULT_MAX_VERSIONS = 32;
export const DEFAULT_MAX_HELD = 8;
export const ACK_BITS = 32;
export const CAUSES = Object.freeze(["full", "cut", "burn"]);
export const RIGID_KINDS = Object.freeze(["instrument", "jaw", "head", "hand", "other", "needle"]);
const NO_JAW = -1;
const CARRIED = 1; // age code of a carried patch entry
const CARRIED_BASE = -1; // baseline recorded for a carried entry: not full, prunes nothing
const SQRT1_2 = 1.0 / Math.sqrt(2.0);
const PATCH_ERRORS = {
  [-10]: "patch id out of range for the epoch's layout",
  [-11]: "the first patch entry has no age to repeat",
  [-12]: "baseline age reaches before sequence 0",
  [-13]: "patch record padding bits are not zero",
  [-14]: "carried baseline, but this epoch has none (it was not entered by a cut the decoder saw)",
  [-15]: "fallback age reaches before sequence 0",
};

export class SnapshotError extends Error {
  constructor(message) {
    super(message);
    this.name = "SnapshotError";
  }
}

class PatchError extends Error {
  constructor(code) {
    super(PATCH_ERRORS[code]);
    this.code = code;
  }
}

// ------------------------------------------------------------------------------------------ header pieces

function readVarint(data, pos, end, what) {
  let value = 0;
  for (let i = 0; i < 5; i++) {
    if (pos >= end) throw new SnapshotError(`truncated varint (${what}) at byte ${pos}`);
    const b = data[pos++];
    value += (b & 0x7f) * 2 ** (7 * i);
    if (!(b & 0x80)) return [value, pos];
  }
  throw new SnapshotError(`varint (${what}) longer than 5 bytes at byte ${pos}`);
}

/** [sequence, serverTime, epoch, recordCount, header length] (snapshot.py read_header). */
export function readHeader(data) {
  if (!data.length) throw new SnapshotError("empty snapshot");
  if (data[0] !== SNAPSHOT_VERSION) {
    throw new SnapshotError(`snapshot version ${data[0]} (this decoder reads ${SNAPSHOT_VERSION})`);
  }
  const end = data.length;
  let [sequence, pos] = readVarint(data, 1, end, "header sequence");
  if (pos + 8 > end) throw new SnapshotError(`snapshot of ${end} bytes is shorter than its header`);
  const serverTime = new DataView(data.buffer, data.byteOffset, data.byteLength).getFloat64(pos, true);
  let epoch;
  let count;
  [epoch, pos] = readVarint(data, pos + 8, end, "header epoch");
  [count, pos] = readVarint(data, pos, end, "header record count");
  if (sequence > 0xffffffff || epoch > 0xffffffff || count > MAX_RECORDS) {
    throw new SnapshotError("snapshot header field out of range");
  }
  if (!Number.isFinite(serverTime)) throw new SnapshotError("snapshot server time is not finite");
  return [sequence, serverTime, epoch, count, pos];
}

function readDriveRecord(data, pos, end) {
  let count;
  [count, pos] = readVarint(data, pos, end, "drive count");
  if (count > MAX_DRIVES) throw new SnapshotError(`drive record of ${count} entries (at most ${MAX_DRIVES})`);
  const drives = new Map();
  for (let e = 0; e < count; e++) {
    let pid;
    [pid, pos] = readVarint(data, pos, end, "predictor id");
    const values = [0, 0, 0];
    for (let a = 0; a < 3; a++) {
      let u;
      [u, pos] = readVarint(data, pos, end, "drive");
      values[a] = unzigzag(u);
    }
    if (drives.has(pid)) throw new SnapshotError(`predictor ${pid} appears twice in the drive record`);
    if (Math.max(...values.map(Math.abs)) > MAX_DRIVE) {
      throw new SnapshotError(`predictor ${pid} drive beyond +-${MAX_DRIVE}`);
    }
    drives.set(pid, values);
  }
  return [drives, pos];
}

// ------------------------------------------------------------------------------------------ messages

/** snap_config fields -> the codec configuration (CodecConfig.from_fields and its checks). */
export function parseConfig(f) {
  const maxError = f.max_error;
  const step = f.step;
  const origin = f.origin;
  if (!Array.isArray(origin) || origin.length !== 3) throw new SnapshotError("snap_config: origin must be three numbers");
  if (!(maxError > 0 && Number.isFinite(maxError))) {
    throw new SnapshotError(`snap_config: max_error must be positive and finite, got ${maxError}`);
  }
  if (!(step > 0 && step <= 2 * maxError)) throw new SnapshotError(`snap_config: step must be in (0, 2 * max_error], got ${step}`);
  if (!origin.every(Number.isFinite)) throw new SnapshotError("snap_config: origin must be three finite numbers");
  const rotationBits = Number(f.rotation_bits);
  const jawBits = Number(f.jaw_bits);
  if (!(rotationBits >= 1 && rotationBits <= 20)) throw new SnapshotError("snap_config: rotation_bits must be 1..20");
  if (!(f.jaw_hi > f.jaw_lo && jawBits >= 1 && jawBits <= 16)) {
    throw new SnapshotError("snap_config: scalar quantizer needs hi > lo and 1..16 bits");
  }
  return Object.freeze({
    maxError,
    origin: Object.freeze([...origin]),
    step,
    rotationBits,
    jaw: Object.freeze({ lo: f.jaw_lo, hi: f.jaw_hi, bits: jawBits }),
  });
}

function validateLayout(vertexIds, offsets) {
  const n = vertexIds.length;
  if (offsets.length < 1 || offsets[0] !== 0 || offsets[offsets.length - 1] !== n) {
    throw new SnapshotError("snap_topology: patch offsets must start at 0 and end at the vertex count");
  }
  for (let p = 0; p + 1 < offsets.length; p++) {
    const size = offsets[p + 1] - offsets[p];
    if (size < 1 || size > MAX_PATCH_SIZE) throw new SnapshotError(`snap_topology: every patch needs 1..${MAX_PATCH_SIZE} vertices`);
  }
  const seen = new Set();
  for (let i = 0; i < n; i++) seen.add(vertexIds[i]);
  if (seen.size !== n) throw new SnapshotError("snap_topology: patch vertex ids must be non-negative and unique");
}

function ids(data, what, width = 1) {
  try {
    return unpackIds(data, what, width);
  } catch (exc) {
    if (exc instanceof ArrayError) throw new SnapshotError(exc.message);
    throw exc;
  }
}

/**
 * snap_topology fields -> {epoch, cause, instrument, layout, kept, removedVertices, removedTriangles, addedTriangles}.
 * A layout edit (kept_patches, SNAPSHOT.md 1) has kept (Int32Array, ascending) and layout null; its
 * listed vertices and offsets wait in `edit` for resolveLayout (which needs the previous layout).
 */
export function parseTopology(f) {
  const epoch = Number(f.epoch);
  if (!(epoch >= 0 && epoch <= 0xffffffff)) throw new SnapshotError(`snap_topology: epoch ${f.epoch} out of range`);
  if (!CAUSES.includes(f.cause)) throw new SnapshotError(`snap_topology: unknown cause ${JSON.stringify(f.cause)}`);
  const vertexIds = ids(f.patch_vertices, "patch_vertices");
  const offsets = ids(f.patch_offsets, "patch_offsets");
  let kept = null;
  if (f.kept_patches !== undefined && f.kept_patches !== null) {
    kept = ids(f.kept_patches, "kept_patches");
    let ascending = true;
    for (let i = 1; i < kept.length; i++) if (kept[i] <= kept[i - 1]) ascending = false;
    if (f.cause === "full" || !ascending) {
      throw new SnapshotError("snap_topology: kept_patches must ascend strictly, and not with cause 'full'");
    }
    if (offsets.length < 1 || offsets[0] !== 0) {
      throw new SnapshotError(`snap_topology: every patch needs 1..${MAX_PATCH_SIZE} vertices`);
    }
    for (let p = 0; p + 1 < offsets.length; p++) {
      const size = offsets[p + 1] - offsets[p];
      if (size < 1 || size > MAX_PATCH_SIZE) throw new SnapshotError(`snap_topology: every patch needs 1..${MAX_PATCH_SIZE} vertices`);
    }
  } else {
    validateLayout(vertexIds, offsets);
  }
  return {
    epoch,
    cause: f.cause,
    instrument: f.instrument ?? null,
    layout: kept === null ? makeLayout(vertexIds, offsets) : null,
    kept,
    edit: kept === null ? null : { vertexIds, offsets },
    removedVertices: ids(f.removed_vertices, "removed_vertices"),
    removedTriangles: ids(f.removed_triangles, "removed_triangles", 3),
    addedTriangles: ids(f.added_triangles, "added_triangles", 3),
  };
}

/** snap_predictor fields -> {pid, vertexIds, gains (Int32Array K * 9)} (parse_predictor and Predictor's checks). */
export function parsePredictor(f) {
  const vertexIds = ids(f.vertex_ids, "snap_predictor vertex_ids");
  const k = vertexIds.length;
  if (k > MAX_PREDICTOR_VERTICES) {
    throw new SnapshotError(`snap_predictor: ${k} vertices (at most ${MAX_PREDICTOR_VERTICES})`);
  }
  let gains;
  try {
    gains = unpackGains(f.gains, k);
  } catch (exc) {
    if (exc instanceof ArrayError) throw new SnapshotError(`snap_predictor: ${exc.message}`);
    throw exc;
  }
  const pid = Number(f.id);
  if (!(pid >= 0 && pid <= MAX_PREDICTOR_ID)) {
    throw new SnapshotError(`snap_predictor: predictor id ${f.id} out of 0..${MAX_PREDICTOR_ID}`);
  }
  if (k < 1) throw new SnapshotError(`snap_predictor: a predictor needs 1..${MAX_PREDICTOR_VERTICES} vertices`);
  for (let i = 1; i < k; i++) {
    if (vertexIds[i] <= vertexIds[i - 1]) {
      throw new SnapshotError("snap_predictor: predictor vertex ids must be non-negative, sorted and unique");
    }
  }
  return Object.freeze({ pid, vertexIds, gains });
}

// ------------------------------------------------------------------------------------------ layouts

function makeLayout(vertexIds, offsets) {
  const patchCount = offsets.length - 1;
  let rowOf = null;
  return Object.freeze({
    vertexIds,
    offsets,
    patchCount,
    vertexCount: vertexIds.length,
    /** Map mesh vertex id -> layout row (built on first use). */
    rows() {
      if (rowOf === null) {
        rowOf = new Map();
        for (let i = 0; i < vertexIds.length; i++) rowOf.set(vertexIds[i], i);
      }
      return rowOf;
    },
  });
}

/** TopologyUpdate.resolve_layout: an edit's full layout, the kept patches' vertices taken from `old`. */
function resolveLayout(update, old) {
  if (update.kept === null) return update.layout;
  const { kept } = update;
  const { vertexIds: listed, offsets } = update.edit;
  const patchCount = offsets.length - 1;
  if (old === null || (kept.length && kept[kept.length - 1] >= Math.min(old.patchCount, patchCount))) {
    throw new SnapshotError("snap_topology: kept patches the previous layout does not have");
  }
  const isKept = new Uint8Array(patchCount);
  for (const p of kept) {
    if (old.offsets[p + 1] - old.offsets[p] !== offsets[p + 1] - offsets[p]) {
      throw new SnapshotError("snap_topology: a kept patch changed size");
    }
    isKept[p] = 1;
  }
  let notKept = 0;
  for (let p = 0; p < patchCount; p++) if (!isKept[p]) notKept += offsets[p + 1] - offsets[p];
  if (notKept !== listed.length) throw new SnapshotError("snap_topology: patch_vertices does not match the patches not kept");
  const vertexIds = new Int32Array(offsets[patchCount]);
  let at = 0;
  for (let p = 0; p < patchCount; p++) {
    const size = offsets[p + 1] - offsets[p];
    if (isKept[p]) {
      vertexIds.set(old.vertexIds.subarray(old.offsets[p], old.offsets[p + 1]), offsets[p]);
    } else {
      vertexIds.set(listed.subarray(at, at + size), offsets[p]);
      at += size;
    }
  }
  validateLayout(vertexIds, offsets);
  return makeLayout(vertexIds, offsets);
}

/** patches.carry_map: for each new row its old patch (-1: none) and row in it; per new patch its sources. */
function carryMap(old, now) {
  const n = now.vertexCount;
  const oldPatch = new Int32Array(n).fill(-1);
  const oldIndex = new Int32Array(n);
  if (old.vertexCount && n) {
    const rowPatch = new Int32Array(old.vertexCount);
    for (let p = 0; p < old.patchCount; p++) rowPatch.fill(p, old.offsets[p], old.offsets[p + 1]);
    const rows = old.rows();
    for (let i = 0; i < n; i++) {
      const r = rows.get(now.vertexIds[i]);
      if (r === undefined) continue;
      oldPatch[i] = rowPatch[r];
      oldIndex[i] = r - old.offsets[rowPatch[r]];
    }
  }
  const offsets = new Int32Array(now.patchCount + 1);
  const sources = [];
  for (let p = 0; p < now.patchCount; p++) {
    const ks = new Set();
    for (let i = now.offsets[p]; i < now.offsets[p + 1]; i++) if (oldPatch[i] >= 0) ks.add(oldPatch[i]);
    const sorted = [...ks].sort((a, b) => a - b);
    sources.push(...sorted);
    offsets[p + 1] = offsets[p] + sorted.length;
  }
  return { oldPatch, oldIndex, offsets, sources: Int32Array.from(sources) };
}

// ------------------------------------------------------------------------------------------ prediction

/** motion_predictor.PredictionField: what the predictors add to each row of one layout (FINE units). */
class PredictionField {
  constructor(layout) {
    this.layout = layout;
    this._rows = new Map(); // pid -> [rows, sel]
  }

  rows(predictor) {
    let hit = this._rows.get(predictor.pid);
    if (hit === undefined) {
      const map = this.layout.rows();
      const rows = [];
      const sel = [];
      for (let k = 0; k < predictor.vertexIds.length; k++) {
        const r = map.get(predictor.vertexIds[k]);
        if (r !== undefined) {
          rows.push(r);
          sel.push(k);
        }
      }
      hit = [Int32Array.from(rows), Int32Array.from(sel)];
      this._rows.set(predictor.pid, hit);
    }
    return hit;
  }

  forget(pid) {
    this._rows.delete(pid);
  }

  /** Sum of P (N * 3, exact integers in a Float64Array) over [predictor, drive] pairs; null when none. */
  fine(active) {
    let out = null;
    for (const [predictor, drive] of active) {
      const [rows, sel] = this.rows(predictor);
      if (rows.length === 0 || (drive[0] === 0 && drive[1] === 0 && drive[2] === 0)) continue;
      if (out === null) out = new Float64Array(this.layout.vertexCount * 3);
      const g = predictor.gains;
      const [d0, d1, d2] = drive;
      for (let j = 0; j < sel.length; j++) {
        const k = 9 * sel[j];
        const o = 3 * rows[j];
        for (let a = 0; a < 3; a++) {
          const acc = g[k + 3 * a] * d0 + g[k + 3 * a + 1] * d1 + g[k + 3 * a + 2] * d2; // exact: < 2^42
          out[o + a] += Math.floor((acc + 2048) / 4096); // (acc + 2^11) >> 12, arithmetic
        }
      }
    }
    return out;
  }
}

// ------------------------------------------------------------------------------------------ versions

/** Add a version; drop those older than the baseline just used and the oldest beyond maxVersions. */
function store(versions, seq, value, baseSeq, maxVersions) {
  versions.set(seq, value);
  if (baseSeq !== null) {
    for (const s of [...versions.keys()]) if (s < baseSeq) versions.delete(s);
  }
  while (versions.size > maxVersions) versions.delete(Math.min(...versions.keys()));
}

function compareHeld(a, b) {
  if (a.epoch !== b.epoch) return a.epoch - b.epoch;
  if (a.seq !== b.seq) return a.seq - b.seq;
  const n = Math.min(a.data.length, b.data.length);
  for (let i = 0; i < n; i++) if (a.data[i] !== b.data[i]) return a.data[i] - b.data[i];
  return a.data.length - b.data.length;
}

// ------------------------------------------------------------------------------------------ the decoder

export class SnapshotDecoder {
  constructor(options = {}) {
    this.maxVersions = options.maxVersions ?? DEFAULT_MAX_VERSIONS;
    this.maxHeld = options.maxHeld ?? DEFAULT_MAX_HELD;
    this.config = null; // set by snap_config
    this._epoch = null;
    this.layout = null;
    this.topology = null;
    this.missingBaselines = 0;
    this.rejected = 0;
    this.dropped = 0;
    this.skippedEntries = 0; // patch entries whose optimistic base was not held (shown approximately)
    this.lateDropped = 0; // late snapshots a later one had needed as a base: never applied
    this.approximate = new Map(); // patch id -> first sequence shown approximately, until an exact entry
    this._needed = new Set(); // sequences a skipped entry named as its base: never applied later
    this._held = []; // {epoch, seq, data}
    this._applied = []; // recent applied sequences, newest last
    this._times = new Map(); // applied sequence -> server time (same bound as _applied)
    this._rigidVersions = new Map(); // oid -> Map(seq -> {kind, pos: [3], rot: [largest, c0, c1, c2], jaw})
    this._rigidLatest = new Map(); // oid -> seq
    this._carry = null; // {map, oldVersions} after a cut
    this._predictors = new Map(); // pid -> predictor
    this._field = null;
    this._fineLatest = null; // Float64Array N * 3 of the newest snapshot's prediction, or null
    this._triangles = new Map(); // "a,b,c" (sorted ids) -> [a, b, c] as sent
    this._trianglesCache = null;
    this._surfaceCache = null;
    this._rows = null; // scratch rows of a patch record being parsed
    this._resetSurface();
  }

  get epoch() {
    return this._epoch;
  }

  get heldCount() {
    return this._held.length;
  }

  get predictors() {
    return [...this._predictors.keys()].sort((a, b) => a - b);
  }

  get newestSequence() {
    return this._applied.length ? this._applied[this._applied.length - 1] : null;
  }

  get serverTime() {
    const seq = this.newestSequence;
    return seq === null ? null : this._times.get(seq);
  }

  _resetSurface() {
    const n = this.layout === null ? 0 : this.layout.vertexCount;
    const p = this.layout === null ? 0 : this.layout.patchCount;
    this._patchVersions = Array.from({ length: p }, () => new Map());
    this._patchLatest = new Float64Array(p).fill(-1);
    this._surfaceQ = new Int32Array(3 * n);
    this._surfaceCache = null;
  }

  // -------------------------------------------------------------- state views

  surfaceFloat64() {
    if (this.layout === null || this.config === null) return new Float64Array(0);
    const { origin, step } = this.config;
    const q = this._surfaceQ;
    const fine = this._fineLatest;
    const out = new Float64Array(q.length);
    const scale = step / FINE;
    const [ox, oy, oz] = origin;
    for (let i = 0; i < q.length; i += 3) {
      out[i] = ox + q[i] * step;
      out[i + 1] = oy + q[i + 1] * step;
      out[i + 2] = oz + q[i + 2] * step;
    }
    if (fine !== null) for (let i = 0; i < q.length; i++) out[i] += fine[i] * scale;
    return out;
  }

  surface() {
    if (this._surfaceCache === null) {
      const layout = this.layout;
      const n = layout === null || this.config === null ? 0 : layout.vertexCount;
      const received = new Uint8Array(n);
      for (let p = 0; n && p < layout.patchCount; p++) {
        if (this._patchLatest[p] >= 0) received.fill(1, layout.offsets[p], layout.offsets[p + 1]);
      }
      this._surfaceCache = Object.freeze({
        ids: n ? layout.vertexIds : new Int32Array(0),
        positions: new Float32Array(this.surfaceFloat64()),
        received,
      });
    }
    return this._surfaceCache;
  }

  /** Server time (s) of each layout patch's newest version, NaN where none is known (the participant client
   *  interpolates patch by patch: participant.js). */
  patchTimes() {
    const n = this.layout === null ? 0 : this.layout.patchCount;
    const out = new Float64Array(n).fill(NaN);
    for (let p = 0; p < n; p++) {
      const seq = this._patchLatest[p];
      if (seq >= 0 && this._times.has(seq)) out[p] = this._times.get(seq);
    }
    return out;
  }

  /** Server time (s) of an applied snapshot sequence still remembered, else null. */
  timeOf(sequence) {
    return this._times.has(sequence) ? this._times.get(sequence) : null;
  }

  surfaceGrid() {
    return this._surfaceQ.slice();
  }

  triangles() {
    if (this._trianglesCache === null) {
      const out = new Int32Array(3 * this._triangles.size);
      let i = 0;
      for (const t of this._triangles.values()) {
        out[i++] = t[0];
        out[i++] = t[1];
        out[i++] = t[2];
      }
      this._trianglesCache = out;
    }
    return this._trianglesCache;
  }

  triangleRows() {
    if (this.layout === null) return new Int32Array(0);
    const rows = this.layout.rows();
    const tris = this.triangles();
    const out = new Int32Array(tris.length);
    let n = 0;
    for (let i = 0; i < tris.length; i += 3) {
      const a = rows.get(tris[i]);
      const b = rows.get(tris[i + 1]);
      const c = rows.get(tris[i + 2]);
      if (a === undefined || b === undefined || c === undefined) continue;
      out[n++] = a;
      out[n++] = b;
      out[n++] = c;
    }
    return out.slice(0, n);
  }

  rigid() {
    const out = new Map();
    for (const [oid, seq] of this._rigidLatest) out.set(oid, this._rigidObject(this._rigidVersions.get(oid).get(seq), seq));
    return out;
  }

  _rigidObject(v, seq) {
    const cfg = this.config;
    const { origin, step, rotationBits } = cfg;
    const levels = 2 ** rotationBits - 1;
    const small = [v.rot[1], v.rot[2], v.rot[3]].map((c) => (c / levels) * (2 * SQRT1_2) - SQRT1_2);
    const big = Math.sqrt(Math.max(0.0, 1.0 - (small[0] * small[0] + small[1] * small[1] + small[2] * small[2])));
    const q = [0, 0, 0, 0];
    const largest = v.rot[0];
    q[largest] = big;
    for (let k = 0, j = 0; k < 4; k++) if (k !== largest) q[k] = small[j++];
    const norm = Math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    const jawLevels = 2 ** cfg.jaw.bits - 1;
    return Object.freeze({
      kind: RIGID_KINDS[v.kind],
      position: [origin[0] + v.pos[0] * step, origin[1] + v.pos[1] * step, origin[2] + v.pos[2] * step],
      rotation: q.map((c) => c / norm),
      jaw: v.jaw === NO_JAW ? null : cfg.jaw.lo + (v.jaw / jawLevels) * (cfg.jaw.hi - cfg.jaw.lo),
      sequence: seq,
    });
  }

  ackFields() {
    if (!this._applied.length) return null;
    const newest = Math.max(...this._applied);
    let bits = 0;
    for (const s of this._applied) {
      const d = newest - s;
      if (d > 0 && d <= ACK_BITS) bits += 2 ** (d - 1);
    }
    return { newest, bits };
  }

  // -------------------------------------------------------------- messages

  onBytes(bytes) {
    let message;
    try {
      message = decodeMessage(bytes, SNAPSHOT_REGISTRY);
    } catch (exc) {
      if (exc instanceof MessageError) throw new SnapshotError(exc.message);
      throw exc;
    }
    return this.onMessage(message.type, message.fields);
  }

  onMessage(type, fields) {
    let f;
    try {
      f = SNAPSHOT_REGISTRY.validate(type, fields);
    } catch (exc) {
      if (exc instanceof MessageError) throw new SnapshotError(exc.message);
      throw exc;
    }
    if (type === "snap_config") {
      this.config = parseConfig(f);
      this._surfaceCache = null;
      return [];
    }
    if (type === "snap_topology") return this._applyTopology(parseTopology(f));
    if (type === "snap_predictor") return this._addPredictor(parsePredictor(f));
    if (type === "snapshot") {
      const seq = this._decodeSnapshot(f.data);
      return seq === null ? [] : [seq];
    }
    throw new SnapshotError(`message ${JSON.stringify(type)} is not for the snapshot decoder`);
  }

  _applyTopology(update) {
    if (this._epoch !== null && update.epoch < this._epoch) {
      throw new SnapshotError(`topology epoch ${update.epoch} is older than the current epoch ${this._epoch}`);
    }
    if (this._epoch !== null && update.epoch === this._epoch && update.cause !== "full") {
      throw new SnapshotError(`topology epoch ${update.epoch} was already applied`);
    }
    const carry = this.layout !== null && this._epoch !== null && update.epoch === this._epoch + 1 && update.cause !== "full";
    if (update.kept !== null && !carry) {
      throw new SnapshotError(`topology epoch ${update.epoch}: a layout edit needs the previous epoch's layout`);
    }
    const oldLayout = this.layout;
    const oldVersions = this._patchVersions;
    const oldLatest = this._patchLatest;
    const oldQ = this._surfaceQ;
    const layout = resolveLayout(update, oldLayout);
    this._carry = carry ? { map: carryMap(oldLayout, layout), oldVersions } : null;
    this._epoch = update.epoch;
    this.layout = layout;
    this.topology = Object.freeze({ epoch: update.epoch, cause: update.cause, instrument: update.instrument });
    this._resetSurface();
    const approximate = this.approximate;
    this.approximate = new Map();
    if (update.kept !== null) {
      // kept patches keep their versions (SNAPSHOT.md 1, layout edits)
      for (const p of update.kept) {
        if (approximate.has(p)) this.approximate.set(p, approximate.get(p));
        this._patchVersions[p] = new Map(oldVersions[p]);
        this._patchLatest[p] = oldLatest[p];
        this._surfaceQ.set(oldQ.subarray(3 * oldLayout.offsets[p], 3 * oldLayout.offsets[p + 1]), 3 * layout.offsets[p]);
      }
    }
    for (const [oid, versions] of this._rigidVersions) {
      const newest = Math.max(...versions.keys());
      this._rigidVersions.set(oid, new Map([[newest, versions.get(newest)]]));
    }
    this._field = new PredictionField(layout);
    layout.rows(); // build the id -> row map now, not in the next snapshot's decode
    this._fineLatest = null;
    this._updateTriangles(update);
    return this._retryHeld();
  }

  _updateTriangles(update) {
    const key = (t, i) => {
      const a = t[i];
      const b = t[i + 1];
      const c = t[i + 2];
      const lo = Math.min(a, b, c);
      const hi = Math.max(a, b, c);
      return `${lo},${a + b + c - lo - hi},${hi}`;
    };
    if (update.cause === "full") this._triangles = new Map();
    const added = update.addedTriangles;
    for (let i = 0; i < added.length; i += 3) {
      const k = key(added, i);
      if (!this._triangles.has(k)) this._triangles.set(k, [added[i], added[i + 1], added[i + 2]]);
    }
    if (update.cause !== "full") {
      const removed = update.removedTriangles;
      for (let i = 0; i < removed.length; i += 3) this._triangles.delete(key(removed, i));
    }
    this._trianglesCache = null;
  }

  _addPredictor(predictor) {
    this._predictors.set(predictor.pid, predictor);
    while (this._predictors.size > 2 * MAX_PREDICTORS) {
      const old = Math.min(...this._predictors.keys());
      this._predictors.delete(old);
      if (this._field !== null) this._field.forget(old);
    }
    return this._retryHeld();
  }

  _retryHeld() {
    const held = this._held.sort(compareHeld);
    this._held = [];
    const out = [];
    for (const h of held) {
      if (h.epoch === this._epoch) {
        try {
          const seq = this._decodeSnapshot(h.data);
          if (seq !== null) out.push(seq);
        } catch (exc) {
          if (!(exc instanceof SnapshotError)) throw exc;
        }
      } else if (h.epoch > this._epoch) {
        this._held.push(h);
      }
    }
    return out;
  }

  _hold(epoch, seq, data) {
    this._held.push({ epoch, seq, data: data.slice() });
    if (this._held.length > this.maxHeld) this._held.splice(0, this._held.length - this.maxHeld);
  }

  // -------------------------------------------------------------- snapshots

  /** The applied sequence, or null when held or dropped; SnapshotError (state untouched) when invalid. */
  _decodeSnapshot(data) {
    try {
      return this._decode(data);
    } catch (exc) {
      if (exc instanceof SnapshotError) this.rejected += 1;
      throw exc;
    }
  }

  _decode(data) {
    if (this.config === null) throw new SnapshotError("no snap_config received yet");
    const [seq, serverTime, epoch, count, start] = readHeader(data);
    if (this.layout === null || epoch !== this._epoch) {
      if (this._epoch === null || epoch > this._epoch) this._hold(epoch, seq, data);
      else this.dropped += 1;
      return null;
    }
    if (this._applied.includes(seq)) throw new SnapshotError(`snapshot ${seq} was already applied`);
    if (this._needed.has(seq)) {
      this.dropped += 1;
      this.lateDropped += 1; // a later snapshot needed it as a base: never applied (nor acked)
      return null;
    }
    const { patches, rigid, drives, skipped } = this._parseRecords(data, start, seq, count);
    const missing = [...drives.keys()].filter((pid) => !this._predictors.has(pid)).sort((a, b) => a - b);
    if (missing.length) {
      this._hold(epoch, seq, data);
      return null;
    }
    let fine = null;
    if (drives.size) fine = this._field.fine([...drives].map(([pid, drive]) => [this._predictors.get(pid), drive]));
    // a snapshot with no patches and no drives (a starved budget) leaves the predicted motion as it was
    this._commit(seq, serverTime, patches, rigid, drives.size || patches.size ? fine : this._fineLatest, skipped);
    return seq;
  }

  _parseRecords(data, pos, seq, count) {
    const end = data.length;
    const patches = new Map(); // pid -> [baseSeq | null, Int32Array rows view]
    const skipped = new Map(); // pid -> [missing optimistic base, Int32Array approximate rows | null]
    const rigid = new Map(); // oid -> [baseSeq | null, version]
    let drives = new Map();
    for (let r = 0; r < count; r++) {
      if (pos >= end) throw new SnapshotError(`snapshot ends after ${r} of ${count} records`);
      const tag = data[pos++];
      if (tag === RECORD_DRIVE) {
        if (r !== 0) throw new SnapshotError(`record ${r}: the drive record must come first`);
        [drives, pos] = readDriveRecord(data, pos, end);
      } else if (tag === RECORD_PATCH) {
        pos = this._parsePatches(data, pos, end, seq, r, patches, skipped);
      } else if (tag === RECORD_RIGID) {
        pos = this._parseRigid(data, pos, end, seq, r, rigid);
      } else {
        throw new SnapshotError(`record ${r}: unknown record tag 0x${tag.toString(16).padStart(2, "0")}`);
      }
    }
    if (pos !== end) throw new SnapshotError(`${end - pos} bytes after the last of ${count} records`);
    return { patches, rigid, drives, skipped };
  }

  _parseRigid(data, pos, end, seq, r, rigid) {
    const cfg = this.config;
    const rbits = cfg.rotationBits;
    const compMax = 2 ** rbits - 1;
    const jawBits = cfg.jaw.bits;
    const jawMax = 2 ** jawBits - 1;
    let count;
    [count, pos] = readVarint(data, pos, end, `record ${r} rigid count`);
    if (count === 0) throw new SnapshotError(`record ${r}: rigid record with no objects`);
    const bits = new BitReader(data, pos * 8, end * 8);
    let oid = -1;
    let age = -1;
    try {
      for (let e = 0; e < count; e++) {
        const where = `record ${r}, rigid entry ${e}`;
        oid += bits.eg(0) + 1;
        if (oid > MAX_OBJECT_ID) throw new SnapshotError(`${where}: rigid id ${oid} above ${MAX_OBJECT_ID}`);
        if (rigid.has(oid)) throw new SnapshotError(`${where}: rigid object ${oid} appears twice`);
        if (bits.small(1)) {
          if (e === 0) throw new SnapshotError(`${where}: the first rigid entry has no age to repeat`);
        } else {
          age = bits.eg(0);
          if (age > seq) throw new SnapshotError(`${where}: baseline age ${age} reaches before sequence 0`);
        }
        const baseSeq = age ? seq - age : null;
        let base;
        if (baseSeq === null) {
          const kind = bits.small(3);
          if (kind >= RIGID_KINDS.length) throw new SnapshotError(`${where}: unknown rigid kind ${kind}`);
          base = { kind, pos: [0, 0, 0], rot: [0, 0, 0, 0], jaw: NO_JAW };
        } else {
          base = this._rigidVersions.get(oid)?.get(baseSeq);
          if (base === undefined) {
            this.missingBaselines += 1;
            throw new SnapshotError(`${where}: rigid object ${oid} baseline ${baseSeq} is not held`);
          }
        }
        const p = [...base.pos];
        const hasPos = bits.small(1);
        if (hasPos) {
          const k = bits.small(4);
          for (let a = 0; a < 3; a++) p[a] += unzigzag(bits.eg(k));
          if (p.some((v) => Math.abs(v) > INT32_LIMIT)) {
            throw new SnapshotError(`${where}: rigid ${oid} position out of the int32 range`);
          }
        }
        let rot = base.rot;
        const hasRot = bits.small(1);
        if (hasRot) {
          if (!bits.small(1)) {
            // the absolute code, LSB first: third, second, first component, then the largest's index
            const c2 = bits.bits(rbits);
            const c1 = bits.bits(rbits);
            const c0 = bits.bits(rbits);
            rot = [bits.small(2), c0, c1, c2];
          } else if (baseSeq === null) {
            throw new SnapshotError(`${where}: orientation change in a full entry`);
          } else {
            const k = bits.small(4);
            const comps = [1, 2, 3].map((j) => base.rot[j] + unzigzag(bits.eg(k)));
            if (Math.min(...comps) < 0 || Math.max(...comps) > compMax) {
              throw new SnapshotError(`${where}: orientation component out of 0..${compMax}`);
            }
            rot = [base.rot[0], ...comps];
          }
        }
        if (baseSeq === null && !(hasPos && hasRot)) {
          throw new SnapshotError(`${where}: full rigid entry ${oid} without position or orientation`);
        }
        let jaw = base.jaw;
        if (bits.small(1)) {
          if (!bits.small(1)) {
            jaw = bits.bits(jawBits);
          } else if (base.jaw === NO_JAW) {
            throw new SnapshotError(`${where}: jaw change without a baseline jaw`);
          } else {
            const k = bits.small(4);
            jaw = base.jaw + unzigzag(bits.eg(k));
            if (!(jaw >= 0 && jaw <= jawMax)) throw new SnapshotError(`${where}: jaw code ${jaw} out of 0..${jawMax}`);
          }
        }
        rigid.set(oid, [baseSeq, { kind: base.kind, pos: p, rot, jaw }]);
      }
      const pad = -bits.bit & 7;
      if (pad && bits.small(pad)) throw new SnapshotError(`record ${r} (rigid): padding bits are not zero`);
    } catch (exc) {
      if (exc instanceof BitError) {
        const why = exc.code === -3 ? `Exp-Golomb prefix longer than 40 bits` : "truncated";
        throw new SnapshotError(`record ${r} (rigid): ${why}`);
      }
      throw exc;
    }
    return bits.bit / 8;
  }

  _parsePatches(data, pos, end, seq, r, patches, skipped) {
    const layout = this.layout;
    if (pos + 2 > end) throw new SnapshotError(`record ${r}: truncated patch count`);
    const count = data[pos] | (data[pos + 1] << 8);
    if (count === 0) throw new SnapshotError(`record ${r}: patch record with no patches`);
    const offsets = layout.offsets;
    const nP = layout.patchCount;
    const carry = this._carry;
    const carryOff = carry === null ? null : carry.map.offsets;
    const entryIds = new Int32Array(count);
    const entryAges = new Float64Array(count);
    const entryFallbacks = new Float64Array(count);
    const starts = new Int32Array(count + 1);
    const carryAges = [];
    const carryStarts = new Int32Array(count);
    // scratch for this record's rows (every block zero-fills its own rows first); copied out below
    if (this._rows === null || this._rows.length < 3 * layout.vertexCount) this._rows = new Float64Array(3 * layout.vertexCount);
    const rows = this._rows;
    const header = [RUNS, 0, 0, 0]; // block headers are relative to the previous one, the first to these
    const bits = new BitReader(data, (pos + 2) * 8, end * 8);
    let oid = -1;
    let age = -1;
    let fallback = 0;
    let e = 0;
    try {
      for (; e < count; e++) {
        const gap = bits.eg(0);
        if (gap >= nP - oid - 1) throw new PatchError(-10);
        oid += gap + 1;
        if (bits.small(1)) {
          if (e === 0) throw new PatchError(-11);
        } else {
          age = bits.eg(0);
          if (age - 1 > seq) throw new PatchError(-12);
          fallback = 0;
          if (age >= 2) {
            fallback = bits.eg(0);
            if (age - 1 + fallback > seq) throw new PatchError(-15);
          }
        }
        carryStarts[e] = carryAges.length;
        if (age === CARRIED) {
          if (carry === null) throw new PatchError(-14);
          for (let j = carryOff[oid]; j < carryOff[oid + 1]; j++) {
            const a = bits.eg(0);
            if (a > seq) throw new PatchError(-12);
            carryAges.push(a);
          }
        }
        const size = offsets[oid + 1] - offsets[oid];
        blockGet(bits, rows, 3 * starts[e], size, header);
        entryIds[e] = oid;
        entryAges[e] = age;
        entryFallbacks[e] = fallback;
        starts[e + 1] = starts[e] + size;
      }
      if (!bits.paddingIsZero()) throw new PatchError(-13);
    } catch (exc) {
      if (exc instanceof BitError || exc instanceof PatchError) {
        const where = `record ${r}, patch entry ${e} of ${count}`;
        throw new SnapshotError(`${where}: ${exc instanceof BitError ? BLOCK_ERRORS[exc.code] : exc.message}`);
      }
      throw exc;
    }
    const at = (bits.bit + 7) >> 3;
    const parsed = [];
    for (let i = 0; i < count; i++) {
      const pid = entryIds[i];
      if (patches.has(pid) || skipped.has(pid)) throw new SnapshotError(`record ${r}: patch ${pid} appears twice`);
      const lo = 3 * starts[i];
      const hi = 3 * starts[i + 1];
      const code = entryAges[i];
      if (code === CARRIED) {
        const base = this._carriedBaseline(pid, seq, carryAges, carryStarts[i], r);
        for (let j = lo; j < hi; j++) rows[j] += base[j - lo];
        patches.set(pid, [CARRIED_BASE, lo, hi]);
        parsed.push(pid);
        continue;
      }
      let baseSeq = code ? seq - (code - 1) : null;
      if (baseSeq !== null) {
        const versions = this._patchVersions[pid];
        const fallbackSeq = baseSeq - entryFallbacks[i];
        if (!versions.has(fallbackSeq)) {
          this.missingBaselines += 1;
          throw new SnapshotError(`record ${r}: patch ${pid} baseline ${fallbackSeq} is not held`);
        }
        const base = versions.get(baseSeq);
        if (base === undefined) {
          // an optimistic base that was lost: shown on what the patch shows, not stored (SNAPSHOT.md 2.2)
          if (seq <= this._patchLatest[pid]) {
            skipped.set(pid, [baseSeq, null]);
          } else {
            const shown = new Int32Array(hi - lo);
            const at = 3 * layout.offsets[pid];
            for (let j = lo; j < hi; j++) shown[j - lo] = rows[j] + this._surfaceQ[at + j - lo];
            skipped.set(pid, [baseSeq, shown]);
          }
          continue;
        }
        for (let j = lo; j < hi; j++) rows[j] += base[j - lo];
        baseSeq = fallbackSeq; // what the server may still use: older versions can go
      }
      patches.set(pid, [baseSeq, lo, hi]);
      parsed.push(pid);
    }
    const used = 3 * starts[count];
    for (let j = 0; j < used; j++) {
      if (Math.abs(rows[j]) > INT32_LIMIT) throw new SnapshotError(`record ${r}: patch grid coordinates out of the int32 range`);
    }
    // one array per patch record; each patch's version is a view of it
    const values = Int32Array.from(rows.subarray(0, used));
    for (const pid of parsed) {
      const [baseSeq, lo, hi] = patches.get(pid);
      patches.set(pid, [baseSeq, values.subarray(lo, hi)]);
    }
    return at;
  }

  _carriedBaseline(pid, seq, ages, from, r) {
    const { map, oldVersions } = this._carry;
    const lo = this.layout.offsets[pid];
    const hi = this.layout.offsets[pid + 1];
    const base = new Float64Array(3 * (hi - lo));
    const s0 = map.offsets[pid];
    for (let j = 0; s0 + j < map.offsets[pid + 1]; j++) {
      const k = map.sources[s0 + j];
      const age = ages[from + j];
      if (age === 0) continue;
      const version = oldVersions[k].get(seq - age);
      if (version === undefined) {
        this.missingBaselines += 1;
        throw new SnapshotError(`record ${r}: patch ${pid} carried baseline ${seq - age} of old patch ${k} not held`);
      }
      for (let i = lo; i < hi; i++) {
        if (map.oldPatch[i] !== k) continue;
        const src = 3 * map.oldIndex[i];
        const dst = 3 * (i - lo);
        base[dst] = version[src];
        base[dst + 1] = version[src + 1];
        base[dst + 2] = version[src + 2];
      }
    }
    return base;
  }

  _commit(seq, serverTime, patches, rigid, fine, skipped) {
    const layout = this.layout;
    const newest = this._applied.length ? Math.max(...this._applied) : -1;
    if (!this._applied.length || seq > newest) this._fineLatest = fine;
    for (const [pid, [baseSeq, shown]] of skipped) {
      this.skippedEntries += 1;
      this._needed.add(baseSeq);
      if (shown !== null) {
        this._surfaceQ.set(shown, 3 * layout.offsets[pid]);
        this._patchLatest[pid] = seq;
        if (!this.approximate.has(pid)) this.approximate.set(pid, seq);
      }
    }
    if (skipped.size || this._needed.size > 4 * ACK_BITS) {
      const keep = Math.max(seq, newest) - 4 * ACK_BITS;
      for (const s of [...this._needed]) if (s <= keep) this._needed.delete(s);
    }
    for (const [pid, [baseSeq, q]] of patches) {
      store(this._patchVersions[pid], seq, q, baseSeq, this.maxVersions);
      if (seq > this._patchLatest[pid]) {
        this._patchLatest[pid] = seq;
        this._surfaceQ.set(q, 3 * layout.offsets[pid]);
        this.approximate.delete(pid);
      }
    }
    for (const [oid, [baseSeq, version]] of rigid) {
      let versions = this._rigidVersions.get(oid);
      if (versions === undefined) {
        versions = new Map();
        this._rigidVersions.set(oid, versions);
      }
      store(versions, seq, version, baseSeq, this.maxVersions);
      if (seq > (this._rigidLatest.get(oid) ?? -1)) this._rigidLatest.set(oid, seq);
    }
    this._applied.push(seq);
    this._times.set(seq, serverTime);
    while (this._applied.length > 4 * ACK_BITS) this._times.delete(this._applied.shift());
    this._surfaceCache = null;
  }
}
