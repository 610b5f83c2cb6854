// The participant's client: the page's port of netcode/thin_client/client.py (ThinClient), specified once for
// both clients in netcode/thin_client/CLIENT.md. Pure logic over decoded state (no DOM, no socket, no clock:
// every time is an argument, in seconds of the page's monotonic clock):
//
//   track(localNow, poses)          this frame's device poses -> the redundant input packet to send
//   onInputAck(fields, localNow)    forget acked samples; the exchange is a clock-sync sample
//   onSnapshot(decoder, localNow)   after the SnapshotDecoder applied a snapshot: per patch and rigid object
//                                   its new versions into interpolation buffers; held patches re-based
//   onGrasp(fields) / onRelease(id) a response model starts / ends held-tissue prediction
//   render(localNow)                surface positions and rigid poses to draw: own instruments from local input,
//                                   held tissue predicted and reconciled, the rest interpolated at render time

import { ClockSync } from './clock_sync.js';
import { AdaptiveDelay, InterpolationBuffer } from './interpolation.js';
import { InputSender } from './input_sender.js';
import { interpolatePose, interpolateVertices } from './poses.js';
import {
  HeldTissue, PoseHistory, RECONCILE_TAU, Reconciler, authoritativeJaw, responseModelFromFields,
} from './prediction.js';

export const MAX_OBJECTS = 4096;

export class ParticipantClient {
  constructor({ devices = [0, 2], tau = RECONCILE_TAU, inputs = {}, clock = {}, delay = {}, jawFrom = 'server' } = {}) {
    this.devices = [...devices];
    this.jawFrom = jawFrom; // 'server': its snapshots of our instrument when they cover the time; 'local': our input history
    this.tau = tau;
    this.delayConfig = delay;
    this.clock = new ClockSync(clock);
    this.delay = new AdaptiveDelay(delay);
    this.inputs = new InputSender(this.devices, inputs);
    this.ownObjects = new Map(); // rigid object id -> device
    this.tracking = new Map(); // device -> pose
    this.localPoses = new Map(); // device -> PoseHistory keyed by estimated server application time
    this.serverPoses = new Map(); // own object id -> PoseHistory of the server's snapshots of it
    this.rigid = new Map(); // object id -> {kind, buffer, newest}
    this.patches = []; // patch index -> {buffer, newest}
    this.grasps = new Map(); // grasp id -> HeldTissue
    this.handoff = new Map(); // patch -> Reconciler (blending back to interpolation after a release)
    this.lastDrawn = new Map(); // patch -> Float64Array drawn at the last render
    this.epoch = null;
    this.offsets = null;
    this.vertexCount = 0;
    this.renderTimeValue = -Infinity;
    this.dropped = { grasp_epoch: 0, grasp_invalid: 0, late: 0, duplicate: 0 };
  }

  own(objectId, device) {
    if (!this.devices.includes(device)) throw new RangeError(`device ${device} is not one of ${this.devices}`);
    this.ownObjects.set(Number(objectId), device);
  }

  serverNow(localNow) {
    return this.clock.serverNow(localNow);
  }

  renderTime(localNow) {
    this.renderTimeValue = Math.max(this.renderTimeValue, this.serverNow(localNow) - this.delay.lag(localNow));
    return this.renderTimeValue;
  }

  // ------------------------------------------------------------------ inputs

  track(localNow, poses) {
    const apply = this.serverNow(localNow) + (this.clock.rtt || 0) / 2;
    for (const device of this.devices) {
      const pose = poses[device];
      if (pose && pose.position.every(Number.isFinite) && Number.isFinite(pose.jaw)) {
        this.tracking.set(device, pose);
        if (!this.localPoses.has(device)) this.localPoses.set(device, new PoseHistory());
        this.localPoses.get(device).add(apply, pose);
      } else {
        this.tracking.delete(device);
      }
    }
    this.inputs.addSample(localNow, poses);
    return this.inputs.packet(localNow);
  }

  onInputAck(fields, localNow) {
    const sent = this.inputs.onAck(fields);
    if (sent === null) return;
    const steps = this.clock.steps;
    this.clock.addExchange(sent, fields.server_time - fields.hold, fields.server_time, localNow);
    if (this.clock.steps !== steps) { // the offset jumped: what was measured or keyed through the old one misleads
      this.delay = new AdaptiveDelay(this.delayConfig);
      this.localPoses.clear();
    }
  }

  // ------------------------------------------------------------------ snapshots

  _newEpoch(decoder) {
    this.epoch = decoder.epoch;
    this.offsets = decoder.layout ? decoder.layout.offsets : null;
    this.vertexCount = decoder.layout ? decoder.layout.vertexCount : 0;
    const count = decoder.layout ? decoder.layout.patchCount : 0;
    this.patches = Array.from({ length: count }, () => ({ buffer: new InterpolationBuffer(interpolateVertices), newest: -Infinity }));
    this.grasps.clear();
    this.handoff.clear();
    this.lastDrawn.clear();
  }

  /** The jaw pose the server had applied at serverTime (CLIENT.md section 5). A state from before the grasp
   *  (a patch the codec has not re-sent since it came to rest) is the state at the grasp: the baseline. */
  _jawAt(model, serverTime) {
    if (serverTime <= model.serverTime) return model.baseline;
    return authoritativeJaw(
      (this.jawFrom === 'server' && this.serverPoses.get(model.instrument)) || new PoseHistory(),
      this.localPoses.get(model.device) || new PoseHistory(),
      serverTime,
    );
  }

  _heldBy(patch) {
    for (const held of this.grasps.values()) if (held.rows.has(patch)) return held;
    return null;
  }

  /** After the decoder applied a snapshot: new versions into the buffers; returns how many were new. */
  onSnapshot(decoder, localNow) {
    if (decoder.layout === null || decoder.serverTime === null) return 0;
    if (decoder.epoch !== this.epoch || decoder.layout.offsets !== this.offsets) this._newEpoch(decoder);
    this.delay.onSnapshot(decoder.serverTime, this.serverNow(localNow));
    let fresh = 0;
    const times = decoder.patchTimes();
    let surface = null;
    for (let p = 0; p < this.patches.length; p++) {
      const entry = this.patches[p];
      const t = times[p];
      if (!(t > entry.newest)) continue;
      surface = surface || decoder.surfaceFloat64();
      const vertices = surface.slice(3 * this.offsets[p], 3 * this.offsets[p + 1]);
      entry.newest = t;
      const result = entry.buffer.insert(t, vertices);
      if (result === 'inserted') fresh += 1;
      else this.dropped[result] += 1;
      const held = this._heldBy(p);
      if (held) {
        const jaw = this._jawAt(held.model, t);
        if (jaw) held.onAuthoritative(p, t, vertices, jaw, localNow, this.lastDrawn.get(p) || null);
      }
    }
    const seen = new Set();
    for (const [rawId, obj] of decoder.rigid()) {
      const id = Number(rawId);
      seen.add(id);
      const t = decoder.timeOf(obj.sequence);
      let entry = this.rigid.get(id);
      if (!entry) {
        if (this.rigid.size >= MAX_OBJECTS) continue;
        entry = { kind: obj.kind, buffer: new InterpolationBuffer(interpolatePose), newest: -Infinity };
        this.rigid.set(id, entry);
      }
      if (t === null || !(t > entry.newest)) continue;
      entry.newest = t;
      entry.kind = obj.kind;
      const pose = { position: obj.position, rotation: obj.rotation, jaw: obj.jaw ?? 0, energy: false };
      if (entry.buffer.insert(t, pose) === 'inserted') fresh += 1;
      if (this.ownObjects.has(id)) {
        if (!this.serverPoses.has(id)) this.serverPoses.set(id, new PoseHistory());
        this.serverPoses.get(id).add(t, pose);
      }
    }
    for (const id of [...this.rigid.keys()]) if (!seen.has(id)) this.rigid.delete(id);
    return fresh;
  }

  // ------------------------------------------------------------------ grasps

  /** A `grasp` message: predict its patches from now on; false if invalid or of another epoch. */
  onGrasp(fields, localNow) {
    let model;
    try {
      model = responseModelFromFields(fields);
    } catch (err) {
      this.dropped.grasp_invalid += 1;
      return false;
    }
    if (model.epoch !== this.epoch || model.objects.some((p) => p >= this.patches.length)) {
      this.dropped.grasp_epoch += 1;
      return false;
    }
    const held = new HeldTissue(model, this.tau);
    this.grasps.set(model.graspId, held);
    for (const p of held.patchIds) {
      const newest = this.patches[p].buffer.newest();
      const jaw = newest ? this._jawAt(model, newest[0]) : null;
      if (newest && jaw) held.onAuthoritative(p, newest[0], newest[1], jaw, localNow, this.lastDrawn.get(p) || null);
      this.handoff.delete(p);
    }
    return true;
  }

  /** A `release`: the grasp's patches blend back to interpolation from where they are drawn. */
  onRelease(graspId, localNow) {
    const held = this.grasps.get(Number(graspId));
    if (!held) return;
    this.grasps.delete(Number(graspId));
    for (const p of held.patchIds) {
      const drawn = this.lastDrawn.get(p);
      const sampled = drawn && this.patches[p] ? this.patches[p].buffer.sample(this.renderTime(localNow)) : null;
      if (!sampled) continue;
      const reconciler = new Reconciler(this.tau);
      reconciler.correct(drawn, sampled[0], localNow);
      this.handoff.set(p, reconciler);
    }
  }

  // ------------------------------------------------------------------ render

  /** {positions: Float64Array (layout order) | null, rigid: Map(id -> {kind, position, rotation, jaw, source}),
   *  sources: counts by source, serverNow, renderTime, delay, latency}. A patch with no sample yet is taken from
   *  fallback() (the decoder's newest surface, layout order) when given, else counted `missing`. */
  render(localNow, fallback = null) {
    const serverNow = this.serverNow(localNow);
    const renderTime = this.renderTime(localNow);
    const sources = { predicted: 0, interpolated: 0, extrapolated: 0, held: 0, early: 0, tracked: 0, missing: 0 };
    let positions = null;
    if (this.offsets !== null) {
      positions = new Float64Array(3 * this.vertexCount);
      const predicted = new Map();
      for (const held of this.grasps.values()) {
        const jaw = this.tracking.get(held.model.device) || held.lastJaw;
        if (!jaw) continue;
        for (const [p, v] of held.display(jaw, localNow)) if (!predicted.has(p)) predicted.set(p, v);
      }
      for (let p = 0; p < this.patches.length; p++) {
        let shown = predicted.get(p);
        if (shown) sources.predicted += 1;
        else {
          const sampled = this.patches[p].buffer.sample(renderTime);
          if (!sampled) {
            fallback = typeof fallback === 'function' ? fallback() : fallback;
            if (!fallback || fallback.length !== positions.length) {
              sources.missing += 1;
              continue;
            }
            positions.set(fallback.subarray(3 * this.offsets[p], 3 * this.offsets[p + 1]), 3 * this.offsets[p]);
            continue;
          }
          shown = sampled[0];
          sources[sampled[1]] += 1;
          const handoff = this.handoff.get(p);
          if (handoff) {
            shown = handoff.apply(shown, localNow);
            if (handoff.offset0 === null) this.handoff.delete(p);
          }
        }
        this.lastDrawn.set(p, shown);
        positions.set(shown, 3 * this.offsets[p]);
      }
    }
    const rigid = new Map();
    for (const [id, entry] of this.rigid) {
      const device = this.ownObjects.get(id);
      const pose = device === undefined ? undefined : this.tracking.get(device);
      if (pose) {
        rigid.set(id, { kind: entry.kind, position: pose.position, rotation: pose.rotation, jaw: pose.jaw, source: 'tracked' });
        sources.tracked += 1;
        continue;
      }
      const sampled = entry.buffer.sample(renderTime);
      if (!sampled) continue;
      sources[sampled[1]] += 1;
      rigid.set(id, { kind: entry.kind, ...sampled[0], source: sampled[1] });
    }
    return { positions, rigid, sources, serverNow, renderTime, delay: this.delay.delay(localNow), latency: this.delay.latency };
  }
}
