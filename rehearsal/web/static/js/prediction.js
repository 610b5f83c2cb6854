// Held-tissue prediction and smooth reconciliation for the participant client: a port of
// netcode/thin_client/prediction.py, specified once for both clients in netcode/thin_client/CLIENT.md (section 5).
//
//   d(pose)     = [p - p0, rotvec(q * q0^-1)]                         (jaw displacement from the grasp baseline)
//   predicted_k = authoritative_k + M_k (d(jaw_now) - d(jaw_auth))    (only the motion the server has not seen)
//   display(t)  = base(t) + offset0 * exp(-(t - tc) / tau)            (offset0 = display_before - base_new at tc)
//
// Vertex arrays are flat Float64Arrays (3 per vertex); a patch is the snapshot layout's patch index, a model
// vertex's row inside its patch. Poses are {position, rotation: [x, y, z, w], jaw} (poses.js).

import { interpolatePose, makePose, quatConj, quatMul, quatToRotvec } from './poses.js';

export const MAX_RESPONSE_VERTICES = 1024;
export const RECONCILE_TAU = 0.12; // s

export class ResponseModelError extends Error {}

/** A response model from `grasp` message fields (messages.js bytes as Uint8Array); ResponseModelError if inconsistent. */
export function responseModelFromFields(f) {
  const columns = f.columns;
  if (columns !== 3 && columns !== 6) throw new ResponseModelError(`columns must be 3 or 6, got ${columns}`);
  if (f.objects.length % 4 || f.objects.length !== f.vertices.length) {
    throw new ResponseModelError('objects and vertices must be equal-length u32 arrays');
  }
  const k = f.objects.length / 4;
  if (k < 1 || k > MAX_RESPONSE_VERTICES) throw new ResponseModelError(`a model holds 1..${MAX_RESPONSE_VERTICES} vertices`);
  if (f.matrices.length !== k * 3 * columns * 4) throw new ResponseModelError(`matrices is ${f.matrices.length} bytes, expected ${k * 3 * columns * 4}`);
  const b = f.baseline;
  if (!Array.isArray(b) || b.length !== 8 || !b.every(Number.isFinite)) throw new ResponseModelError('baseline must hold 8 finite floats');
  const u32 = (bytes) => {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return Uint32Array.from({ length: k }, (_, i) => view.getUint32(4 * i, true));
  };
  const mview = new DataView(f.matrices.buffer, f.matrices.byteOffset, f.matrices.byteLength);
  const matrices = new Float64Array(k * 3 * columns);
  for (let i = 0; i < matrices.length; i++) {
    matrices[i] = mview.getFloat32(4 * i, true);
    if (!Number.isFinite(matrices[i])) throw new ResponseModelError('non-finite matrices');
  }
  return {
    graspId: Number(f.grasp_id),
    instrument: Number(f.instrument),
    device: Number(f.device),
    epoch: Number(f.epoch),
    serverTime: f.server_time,
    columns,
    objects: u32(f.objects),
    vertices: u32(f.vertices),
    matrices, // row-major K x 3 x C
    baseline: makePose(b.slice(0, 3), b.slice(3, 7), b[7]),
  };
}

/** The 6-vector [p - p0, rotvec(q q0^-1)] of a jaw pose relative to the baseline. */
export function jawDisplacement(pose, baseline) {
  const r = quatToRotvec(quatMul(pose.rotation, quatConj(baseline.rotation)));
  const p = pose.position;
  const p0 = baseline.position;
  return [p[0] - p0[0], p[1] - p0[1], p[2] - p0[2], r[0], r[1], r[2]];
}

/** Flat K x 3 predicted displacement of the model's vertices beyond the authoritative state. */
export function predictedDelta(model, jawNow, jawAuth) {
  const a = jawDisplacement(jawNow, model.baseline);
  const b = jawDisplacement(jawAuth, model.baseline);
  const c = model.columns;
  const d = a.slice(0, c).map((x, i) => x - b[i]);
  const k = model.objects.length;
  const out = new Float64Array(3 * k);
  const m = model.matrices;
  for (let v = 0; v < k; v++) {
    for (let r = 0; r < 3; r++) {
      let s = 0;
      const row = (3 * v + r) * c;
      for (let j = 0; j < c; j++) s += m[row + j] * d[j];
      out[3 * v + r] = s;
    }
  }
  return out;
}

export function decayFactor(elapsed, tau) {
  return tau > 0 ? Math.exp(-Math.max(0, elapsed) / tau) : 0;
}

/** A bounded history of poses by time; at(t) interpolates (holds at the ends). */
export class PoseHistory {
  constructor(capacity = 256) {
    this.capacity = capacity;
    this.times = [];
    this.poses = [];
  }

  get length() {
    return this.times.length;
  }

  add(time, pose) {
    let i = this.times.length;
    while (i > 0 && this.times[i - 1] > time) i--;
    if (i > 0 && this.times[i - 1] === time) {
      this.poses[i - 1] = pose;
    } else {
      this.times.splice(i, 0, time);
      this.poses.splice(i, 0, pose);
    }
    if (this.times.length > this.capacity) {
      this.times.shift();
      this.poses.shift();
    }
  }

  span() {
    return this.times.length ? [this.times[0], this.times[this.times.length - 1]] : null;
  }

  at(time) {
    const t = this.times;
    if (!t.length) return null;
    let i = 0;
    while (i < t.length && t[i] <= time) i++; // bisect_right
    if (i === 0) return this.poses[0];
    if (i === t.length) return this.poses[t.length - 1];
    return interpolatePose(this.poses[i - 1], this.poses[i], (time - t[i - 1]) / (t[i] - t[i - 1]));
  }
}

/** An exponentially decaying display offset for one vertex array. */
export class Reconciler {
  constructor(tau = RECONCILE_TAU) {
    this.tau = tau;
    this.offset0 = null;
    this.since = 0;
  }

  apply(base, localNow) {
    const off = this.offset0;
    if (off === null || off.length !== base.length) return base;
    const f = decayFactor(localNow - this.since, this.tau);
    const out = new Float64Array(base.length);
    let largest = 0;
    for (let i = 0; i < base.length; i++) {
      const o = off[i] * f;
      largest = Math.max(largest, Math.abs(o));
      out[i] = base[i] + o;
    }
    if (largest < 1e-9) this.offset0 = null;
    return out;
  }

  correct(displayBefore, newBase, localNow) {
    if (displayBefore.length !== newBase.length || !displayBefore.every(Number.isFinite)) {
      this.offset0 = null;
      return;
    }
    this.offset0 = Float64Array.from(displayBefore, (x, i) => x - newBase[i]);
    this.since = localNow;
  }
}

/** Prediction + reconciliation of the patches one grasp's response model touches. */
export class HeldTissue {
  constructor(model, tau = RECONCILE_TAU) {
    this.model = model;
    this.tau = tau;
    this.auth = new Map(); // patch -> {time, vertices, jaw}
    this.rows = new Map(); // patch -> {rows: model rows, idx: vertex rows in the patch}
    model.objects.forEach((patch, row) => {
      if (!this.rows.has(patch)) this.rows.set(patch, { rows: [], idx: [] });
      this.rows.get(patch).rows.push(row);
      this.rows.get(patch).idx.push(model.vertices[row]);
    });
    this.reconcilers = new Map([...this.rows.keys()].map((p) => [p, new Reconciler(tau)]));
    this.lastJaw = null;
    this.rejected = 0;
  }

  get patchIds() {
    return [...this.rows.keys()].sort((a, b) => a - b);
  }

  base(patch, jawNow) {
    const entry = this.auth.get(patch);
    if (!entry) return null;
    const { rows, idx } = this.rows.get(patch);
    const delta = predictedDelta(this.model, jawNow, entry.jaw);
    const out = Float64Array.from(entry.vertices);
    rows.forEach((row, n) => {
      const v = 3 * idx[n];
      out[v] += delta[3 * row];
      out[v + 1] += delta[3 * row + 1];
      out[v + 2] += delta[3 * row + 2];
    });
    return out;
  }

  displayPatch(patch, jawNow, localNow) {
    const base = this.base(patch, jawNow);
    return base === null ? null : this.reconcilers.get(patch).apply(base, localNow);
  }

  /** A newer authoritative state of a held patch (with the jaw the server applied); false if ignored. */
  onAuthoritative(patch, serverTime, vertices, jawAuth, localNow, displayBefore = null) {
    const ri = this.rows.get(patch);
    if (!ri) return false;
    const old = this.auth.get(patch);
    if (old && serverTime <= old.time) return false;
    if (vertices.length % 3 || Math.max(...ri.idx) >= vertices.length / 3) {
      this.rejected += 1;
      return false;
    }
    const jawNow = this.lastJaw || jawAuth;
    const before = old ? this.displayPatch(patch, jawNow, localNow) : displayBefore;
    this.auth.set(patch, { time: serverTime, vertices: Float64Array.from(vertices), jaw: jawAuth });
    if (before) this.reconcilers.get(patch).correct(before, this.base(patch, jawNow), localNow);
    return true;
  }

  /** Map patch -> vertices to draw, for every held patch with an authoritative state. */
  display(jawNow, localNow) {
    this.lastJaw = jawNow;
    const out = new Map();
    for (const patch of this.auth.keys()) {
      const shown = this.displayPatch(patch, jawNow, localNow);
      if (shown) out.set(patch, shown);
    }
    return out;
  }
}

/** The jaw pose the server applied at serverTime: its own snapshots when they cover it (within maxGap),
 *  else the local tracking history keyed by estimated application time. */
export function authoritativeJaw(serverHistory, localHistory, serverTime, maxGap = 0.1) {
  const span = serverHistory.span();
  if (span && span[0] - maxGap <= serverTime && serverTime <= span[1] + maxGap) return serverHistory.at(serverTime);
  return localHistory.at(serverTime);
}
