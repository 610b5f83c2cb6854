// The participant's input packets: numbered samples, redundant packets, forgetting what the server acked.
// A port of netcode/thin_client/input_sender.py and the packet codec of netcode/protocol/inputs.py; the
// format and the algorithm are specified once for both clients in netcode/thin_client/CLIENT.md (section 2).
// Every packet repeats all unacked samples (at most `window`), so one packet that arrives fills the gaps
// behind it; the bytes equal Python's for the same samples (tests/rehearsal/web/test_participant_modules.py).

import { quatNormalize } from './poses.js';

export const VERSION = 1;
export const HEADER_SIZE = 8;
export const POSE_SIZE = 23;
export const MAX_DEVICES = 16;
export const MAX_SAMPLES = 255;
export const JAW_UNIT = 1e-4;
export const TRACKED = 0x01;
export const ENERGY = 0x02;

export function sampleSize(deviceCount) {
  return 8 + POSE_SIZE * deviceCount;
}

export function packetSize(deviceCount, sampleCount) {
  return HEADER_SIZE + deviceCount + sampleCount * sampleSize(deviceCount);
}

/** Python's round(): to the nearest integer, halves to even (so the bytes match the reference encoder). */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function clipI16(x) {
  return Math.max(-32767, Math.min(32767, roundHalfEven(x)));
}

/** One sample's wire bytes: client time f64, then one 23-byte pose per device (null: untracked). */
export function encodeSample(clientTime, poses) {
  const out = new Uint8Array(sampleSize(poses.length));
  const view = new DataView(out.buffer);
  view.setFloat64(0, clientTime, true);
  poses.forEach((pose, i) => {
    const o = 8 + POSE_SIZE * i;
    const p = pose && pose.position;
    const finite = p && Number.isFinite(p[0]) && Number.isFinite(p[1]) && Number.isFinite(p[2]) && Number.isFinite(pose.jaw);
    if (!finite) {
      view.setInt16(o + 19, 32767, true); // untracked: flags 0, identity rotation
      return;
    }
    const q = quatNormalize(pose.rotation || [0, 0, 0, 1]);
    view.setUint8(o, TRACKED | (pose.energy ? ENERGY : 0));
    view.setFloat32(o + 1, p[0], true);
    view.setFloat32(o + 5, p[1], true);
    view.setFloat32(o + 9, p[2], true);
    for (let k = 0; k < 4; k++) view.setInt16(o + 13 + 2 * k, clipI16(q[k] * 32767), true);
    view.setInt16(o + 21, clipI16(pose.jaw / JAW_UNIT), true);
  });
  return out;
}

/** Client side: numbers samples, builds redundant packets within maxBytes, forgets acked samples. */
export class InputSender {
  constructor(devices, { maxSamples = 16, maxBytes = 1100 } = {}) {
    if (!(devices.length >= 1 && devices.length <= MAX_DEVICES) || devices.some((d) => !(d >= 0 && d <= 255))) {
      throw new RangeError(`need 1..${MAX_DEVICES} device ids in 0..255`);
    }
    this.devices = [...devices];
    const fit = Math.floor((maxBytes - HEADER_SIZE - devices.length) / sampleSize(devices.length));
    this.window = Math.max(1, Math.min(maxSamples, MAX_SAMPLES, fit));
    this.pending = []; // {seq, time, bytes}, oldest first, at most `window`
    this.sentAt = new Map(); // newest seq of a packet -> local time it was first sent (clock sync)
    this.nextSeq = 0;
    this.acked = null;
    this.abandoned = 0; // samples pushed out of the window before being acked
  }

  /** This frame's poses ({device: pose or null}; missing devices untracked); returns the sample's seq. */
  addSample(clientTime, poses) {
    const seq = this.nextSeq;
    this.nextSeq += 1;
    if (this.pending.length === this.window) {
      this.pending.shift();
      this.abandoned += 1;
    }
    this.pending.push({ seq, time: clientTime, bytes: encodeSample(clientTime, this.devices.map((d) => poses[d] ?? null)) });
    return seq;
  }

  /** The packet to send now (every unacked sample, oldest first), or null when none is pending. */
  packet(localNow) {
    const pending = this.pending;
    if (!pending.length) return null;
    const newest = pending[pending.length - 1].seq;
    if (!this.sentAt.has(newest)) this.sentAt.set(newest, localNow);
    while (this.sentAt.size > 4 * this.window) this.sentAt.delete(this.sentAt.keys().next().value);
    const d = this.devices.length;
    const out = new Uint8Array(packetSize(d, pending.length));
    const view = new DataView(out.buffer);
    view.setUint8(0, VERSION);
    view.setUint8(1, d);
    view.setUint8(2, pending.length);
    view.setUint32(4, pending[0].seq, true);
    out.set(this.devices, HEADER_SIZE);
    let o = HEADER_SIZE + d;
    for (const s of pending) {
      out.set(s.bytes, o);
      o += s.bytes.length;
    }
    return out;
  }

  /** An input_ack {seq, server_time, hold}: forget samples up to seq; returns that packet's send time or null. */
  onAck(ack) {
    const sent = this.sentAt.has(ack.seq) ? this.sentAt.get(ack.seq) : null;
    if (this.acked === null || ack.seq > this.acked) {
      this.acked = ack.seq;
      while (this.pending.length && this.pending[0].seq <= ack.seq) this.pending.shift();
    }
    for (const seq of [...this.sentAt.keys()]) if (seq <= this.acked) this.sentAt.delete(seq);
    return sent;
  }
}
