// Desktop input for the participant client, pure (no DOM: the page forwards keys, drags and gamepad state).
//
//   W/S, A/D: move the active instrument along -z/+z, -x/+x; R/F: up/down; Shift: slow (a quarter)
//   arrow keys: turn it (left/right about the vertical, up/down tilt); Q/E: roll
//   Space (held): close the jaws; H (held): energize the hook (the cautery pedal); Tab: the other hand
//   left-button drag: move in the horizontal plane (with Shift: up and down); right drag orbits the view
//   gamepad (standard mapping): left stick x/z, right stick vertical / turn, right trigger closes the jaws,
//   A energizes, the shoulder buttons choose the hand
//
// Motion is rate-limited (MAX_SPEED, far below the server's 2 m/s pose guard) and kept in WORKSPACE, so an
// instrument never jumps: a drag's motion is spent over the next frames. The head is the camera (the page
// passes the camera's pose), so the view follows the participant's head.

import { makePose, quatMul, quatNormalize, rotvecToQuat } from './poses.js';
import { DEVICE_LEFT, DEVICE_RIGHT, OPEN_JAW } from './xr_input.js';

export const SPEED = 0.04; // m/s with a key held
export const TURN_RATE = 1.2; // rad/s with an arrow key held
export const JAW_RATE = 5.0; // rad/s the jaws close or open
export const MAX_SPEED = 0.5; // m/s, whatever the input
export const DRAG_METRES_PER_PIXEL = 0.0002;
export const WORKSPACE = Object.freeze({ lo: [-0.2, 0.0, -0.2], hi: [0.2, 0.3, 0.2] });
// Pointing down at the tissue, jaws' plane across x: look_rotation(forward=(0, -1, 0), up=(1, 0, 0)), [x, y, z, w].
export const DOWN = Object.freeze([0.5, 0.5, -0.5, 0.5]);
const START = { right: [0.0, 0.06, 0.0], left: [-0.03, 0.06, 0.0] };
export const DEVICE_OF_HAND = Object.freeze({ left: DEVICE_LEFT, right: DEVICE_RIGHT });

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

export class DesktopRig {
  /** hands: the hands this participant drives (welcome.hands' keys), e.g. ["right"]. */
  constructor(hands = ['right']) {
    this.hands = new Map();
    for (const hand of hands) {
      if (!(hand in DEVICE_OF_HAND)) continue;
      this.hands.set(hand, {
        position: [...(START[hand] || START.right)], yaw: 0, pitch: 0, roll: 0, jaw: OPEN_JAW, energy: false, close: 0,
      });
    }
    this.active = this.hands.has('right') ? 'right' : [...this.hands.keys()][0] || null;
    this.keys = new Set();
    this.pending = [0, 0, 0]; // drag motion not yet spent (m)
    this.pad = null; // newest gamepad state
  }

  keyDown(code) {
    if (code === 'Tab') this.nextHand();
    else this.keys.add(code);
  }

  keyUp(code) {
    this.keys.delete(code);
  }

  nextHand() {
    const names = [...this.hands.keys()];
    if (names.length > 1) this.active = names[(names.indexOf(this.active) + 1) % names.length];
  }

  /** A drag of dx, dy pixels (vertical: Shift held, dy moves up/down). */
  drag(dx, dy, vertical = false) {
    const k = DRAG_METRES_PER_PIXEL;
    if (vertical) this.pending[1] -= dy * k;
    else {
      this.pending[0] += dx * k;
      this.pending[2] += dy * k;
    }
  }

  /** The newest gamepad state: {axes: [4], buttons: [{value, pressed}]} (standard mapping), or null. */
  gamepad(state) {
    this.pad = state;
  }

  /** Advance the active hand by dt seconds of held keys, drags and the gamepad. */
  step(dt) {
    const h = this.hands.get(this.active);
    if (!h || !(dt > 0)) return;
    dt = Math.min(dt, 0.1);
    const key = (c) => (this.keys.has(c) ? 1 : 0);
    const pad = this.pad;
    const axis = (i) => (pad && Math.abs(pad.axes[i] || 0) > 0.15 ? pad.axes[i] : 0);
    const button = (i) => (pad && pad.buttons[i] ? Math.max(Number(pad.buttons[i].value) || 0, pad.buttons[i].pressed ? 1 : 0) : 0);
    if (pad && button(4) && this.hands.has('left')) this.active = 'left';
    if (pad && button(5) && this.hands.has('right')) this.active = 'right';
    const slow = this.keys.has('ShiftLeft') || this.keys.has('ShiftRight') ? 0.25 : 1;
    const v = [
      (key('KeyD') - key('KeyA') + axis(0)) * SPEED * slow,
      (key('KeyR') - key('KeyF') - axis(3)) * SPEED * slow,
      (key('KeyS') - key('KeyW') + axis(1)) * SPEED * slow,
    ];
    const move = v.map((x) => x * dt);
    const budget = MAX_SPEED * dt;
    const spend = Math.min(1, budget / Math.max(Math.hypot(...this.pending), 1e-12));
    for (let i = 0; i < 3; i++) {
      const take = this.pending[i] * spend;
      this.pending[i] -= take;
      move[i] += take;
    }
    const length = Math.hypot(...move);
    const scale = length > budget ? budget / length : 1;
    for (let i = 0; i < 3; i++) h.position[i] = clamp(h.position[i] + move[i] * scale, WORKSPACE.lo[i], WORKSPACE.hi[i]);
    h.yaw += (key('ArrowLeft') - key('ArrowRight') - axis(2)) * TURN_RATE * dt;
    h.pitch = clamp(h.pitch + (key('ArrowUp') - key('ArrowDown')) * TURN_RATE * dt, -1.2, 1.2);
    h.roll += (key('KeyE') - key('KeyQ')) * TURN_RATE * dt;
    const close = Math.max(key('Space'), button(7));
    const target = OPEN_JAW * (1 - close);
    const dj = JAW_RATE * dt;
    h.jaw = h.jaw + clamp(target - h.jaw, -dj, dj);
    h.energy = this.keys.has('KeyH') || button(0) > 0.5;
  }

  /** The instrument's rotation: DOWN rolled about its axis, tilted about world x, turned about world y. */
  static rotation(h) {
    const roll = rotvecToQuat([0, -h.roll, 0]); // DOWN's axis points along world -y
    const tilt = rotvecToQuat([h.pitch, 0, 0]);
    const turn = rotvecToQuat([0, h.yaw, 0]);
    return quatNormalize(quatMul(turn, quatMul(tilt, quatMul(roll, DOWN))));
  }

  /** {device: pose} of every hand (and the head's pose when given). */
  poses(head = null) {
    const out = {};
    for (const [hand, h] of this.hands) out[DEVICE_OF_HAND[hand]] = makePose(h.position, DesktopRig.rotation(h), h.jaw, h.energy);
    if (head) out[0] = makePose(head.position, head.rotation, 0, false);
    return out;
  }
}
