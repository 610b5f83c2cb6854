// The `forces` message (netcode/protocol/forces.py, netcode/thin_client/CLIENT.md section 8) decoded for the
// page: per instrument object, the force the tissue exerts on it and its grasp's pull, in newtons.

export const FORCE_UNIT = 0.01; // N per i16 unit

export class ForcesError extends Error {}

/** {tick, serverTime, byObject: Map(object id -> {force: [3] N, grasp: [3] N, position: [3] m})}. */
export function parseForces(f) {
  const n = f.objects.length / 4;
  if (!Number.isInteger(n) || f.forces.length !== 6 * n || f.grasp.length !== 6 * n || f.positions.length !== 12 * n) {
    throw new ForcesError('forces: inconsistent array lengths');
  }
  const view = (b) => new DataView(b.buffer, b.byteOffset, b.byteLength);
  const [objects, forces, grasp, positions] = [f.objects, f.forces, f.grasp, f.positions].map(view);
  const byObject = new Map();
  for (let i = 0; i < n; i++) {
    const vec = (v) => [0, 1, 2].map((k) => v.getInt16(2 * (3 * i + k), true) * FORCE_UNIT);
    const position = [0, 1, 2].map((k) => positions.getFloat32(4 * (3 * i + k), true));
    if (!position.every(Number.isFinite)) throw new ForcesError('forces: non-finite position');
    byObject.set(objects.getUint32(4 * i, true), { force: vec(forces), grasp: vec(grasp), position });
  }
  return { tick: Number(f.tick), serverTime: f.server_time, byObject };
}

export function magnitude(v) {
  return Math.hypot(v[0], v[1], v[2]);
}
