// Rigid poses and quaternion maths for the participant client: a port of netcode/protocol/poses.py.
// Conventions (netcode/thin_client/CLIENT.md): metres, radians, quaternions [x, y, z, w], q and -q equal,
// interpolation the short way. A pose is {position: [x, y, z], rotation: [x, y, z, w], jaw, energy}.

export const IDENTITY = Object.freeze([0, 0, 0, 1]);

/** Unit quaternion; the identity for a zero or non-finite input (never NaN). */
export function quatNormalize(q) {
  const n = Math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  if (!Number.isFinite(n) || n < 1e-12) return [0, 0, 0, 1];
  return [q[0] / n, q[1] / n, q[2] / n, q[3] / n];
}

/** Hamilton product a * b (b first, then a). */
export function quatMul(a, b) {
  const [ax, ay, az, aw] = a;
  const [bx, by, bz, bw] = b;
  return [
    aw * bx + ax * bw + ay * bz - az * by,
    aw * by - ax * bz + ay * bw + az * bx,
    aw * bz + ax * by - ay * bx + az * bw,
    aw * bw - ax * bx - ay * by - az * bz,
  ];
}

export function quatConj(q) {
  return [-q[0], -q[1], -q[2], q[3]];
}

/** Rotation vector (axis * angle, angle in [0, pi]) of a unit quaternion. */
export function quatToRotvec(q0) {
  let q = quatNormalize(q0);
  if (q[3] < 0) q = [-q[0], -q[1], -q[2], -q[3]];
  const s = Math.hypot(q[0], q[1], q[2]);
  if (s < 1e-12) return [2 * q[0], 2 * q[1], 2 * q[2]];
  const k = (2 * Math.atan2(s, q[3])) / s;
  return [q[0] * k, q[1] * k, q[2] * k];
}

export function rotvecToQuat(v) {
  const angle = Math.hypot(v[0], v[1], v[2]);
  if (angle < 1e-12) return quatNormalize([v[0] / 2, v[1] / 2, v[2] / 2, 1]);
  const s = Math.sin(angle / 2) / angle;
  return [v[0] * s, v[1] * s, v[2] * s, Math.cos(angle / 2)];
}

/** Spherical interpolation a (u = 0) to b (u = 1), the short way; u > 1 extrapolates. */
export function slerp(a0, b0, u) {
  const a = quatNormalize(a0);
  let b = quatNormalize(b0);
  if (a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3] < 0) b = [-b[0], -b[1], -b[2], -b[3]];
  const d = quatToRotvec(quatMul(quatConj(a), b));
  return quatNormalize(quatMul(a, rotvecToQuat([d[0] * u, d[1] * u, d[2] * u])));
}

/** Rotate vector v by unit quaternion q. */
export function rotate(q0, v) {
  const q = quatNormalize(q0);
  const [ux, uy, uz, w] = q;
  const tx = 2 * (uy * v[2] - uz * v[1]);
  const ty = 2 * (uz * v[0] - ux * v[2]);
  const tz = 2 * (ux * v[1] - uy * v[0]);
  return [
    v[0] + w * tx + (uy * tz - uz * ty),
    v[1] + w * ty + (uz * tx - ux * tz),
    v[2] + w * tz + (ux * ty - uy * tx),
  ];
}

export function makePose(position, rotation = IDENTITY, jaw = 0, energy = false) {
  return { position: [position[0], position[1], position[2]], rotation: quatNormalize(rotation), jaw: Number(jaw), energy: Boolean(energy) };
}

/** Pose between a (u = 0) and b (u = 1): lerp position and jaw, slerp rotation; u > 1 extrapolates. */
export function interpolatePose(a, b, u) {
  const p = a.position;
  const q = b.position;
  return {
    position: [p[0] + (q[0] - p[0]) * u, p[1] + (q[1] - p[1]) * u, p[2] + (q[2] - p[2]) * u],
    rotation: slerp(a.rotation, b.rotation, u),
    jaw: a.jaw + (b.jaw - a.jaw) * u,
    energy: u >= 0.5 ? b.energy : a.energy,
  };
}

/** Vertex arrays (flat, 3 per vertex) between a and b; b (a copy) when the lengths differ. */
export function interpolateVertices(a, b, u) {
  if (a.length !== b.length) return Float64Array.from(b);
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + (b[i] - a[i]) * u;
  return out;
}
