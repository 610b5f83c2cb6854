// WebXR input mapping for the participant client, pure (no XR session needed: tests feed plain objects).
//
// Two controllers are the two hands (handedness "left" -> device 1, "right" -> device 2; rehearsal/wire.py),
// the viewer pose is the head (device 0). Grip or trigger closes the jaws: jaw = openJaw * (1 - max(trigger,
// grip)); button 4 or 5 (A/B, X/Y on xr-standard gamepads) or the thumbstick press energizes the hook. XR
// poses live in the session's reference space; the room's operating field sits at `origin` in it (the
// tissue at a comfortable height in front of the user), so room = xr - origin. Instruments point along
// their local +z (the jaws' end), a controller along its -z; a headset looks along +z, an XR viewer along -z:
// both are turned half a turn about their own y.
//
// Haptics: the vibration of a hand's controller follows its instrument's forces (forces.js): a pulse when
// contact starts, then an intensity that scales with the grasp's pull (and the contact force), capped at 1.

import { quatMul } from './poses.js';
import { magnitude } from './forces.js';

export const DEVICE_HEAD = 0;
export const DEVICE_LEFT = 1;
export const DEVICE_RIGHT = 2;
export const DEVICE_OF_HANDEDNESS = Object.freeze({ left: DEVICE_LEFT, right: DEVICE_RIGHT });
export const OPEN_JAW = 1.0; // rad, jaws fully open
export const DEFAULT_ORIGIN = Object.freeze([0, 0.9, -0.35]); // m, reference-space point of the room's origin
const HALF_TURN_Y = [0, 1, 0, 0];

function value(button) {
  if (!button) return 0;
  const v = Number(button.value);
  return Math.max(Number.isFinite(v) ? v : 0, button.pressed ? 1 : 0);
}

/** Jaw opening (rad) from an xr-standard gamepad's buttons: trigger is 0, squeeze (grip) is 1. */
export function jawFromButtons(buttons, openJaw = OPEN_JAW) {
  const closed = Math.min(1, Math.max(value(buttons && buttons[0]), value(buttons && buttons[1])));
  return openJaw * (1 - closed);
}

/** Energy (the hook's cautery pedal) from the primary/secondary face buttons or the thumbstick press. */
export function energyFromButtons(buttons) {
  return Boolean(buttons && [3, 4, 5].some((i) => buttons[i] && buttons[i].pressed));
}

/** An XR pose ({position: [3] or {x,y,z}, orientation: [4] or {x,y,z,w}}) in room coordinates, turned to +z. */
export function roomPose(xrPose, origin = DEFAULT_ORIGIN) {
  const p = xrPose.position;
  const o = xrPose.orientation;
  const pos = Array.isArray(p) ? p : [p.x, p.y, p.z];
  const rot = Array.isArray(o) ? o : [o.x, o.y, o.z, o.w];
  return {
    position: [pos[0] - origin[0], pos[1] - origin[1], pos[2] - origin[2]],
    rotation: quatMul(rot, HALF_TURN_Y),
  };
}

/** Device poses ({device id: pose}) from one XR frame's plain data:
 *  {viewer: pose | null, controllers: [{handedness, grip: pose | null, buttons: [{value, pressed}]}]}. */
export function xrDevicePoses(frame, origin = DEFAULT_ORIGIN, openJaw = OPEN_JAW) {
  const out = {};
  if (frame.viewer) out[DEVICE_HEAD] = { ...roomPose(frame.viewer, origin), jaw: 0, energy: false };
  for (const c of frame.controllers || []) {
    const device = DEVICE_OF_HANDEDNESS[c.handedness];
    if (device === undefined || !c.grip || device in out) continue; // "none" handedness, untracked, a duplicate
    out[device] = { ...roomPose(c.grip, origin), jaw: jawFromButtons(c.buttons, openJaw), energy: energyFromButtons(c.buttons) };
  }
  return out;
}

export const HAPTIC_DEFAULTS = Object.freeze({
  contactNewtons: 0.05, // a force above this is contact
  fullScaleNewtons: 3.0, // grasp pull + contact at which the vibration is full
  pulseIntensity: 0.8,
  pulseMs: 40,
  holdMs: 60, // each continuous pulse, renewed every forces message
});

/** Per hand: the vibration to play for one forces message. Pure state machine over the contact edge. */
export class HapticMapper {
  constructor(config = {}) {
    this.config = { ...HAPTIC_DEFAULTS, ...config };
    this.inContact = new Map(); // device -> bool
  }

  /** instruments: Map(device -> {force, grasp} in N) -> [{device, intensity 0..1, durationMs}]. */
  update(instruments) {
    const c = this.config;
    const out = [];
    for (const [device, f] of instruments) {
      const contact = magnitude(f.force);
      const pull = magnitude(f.grasp);
      const touching = contact > c.contactNewtons || pull > c.contactNewtons;
      const was = this.inContact.get(device) || false;
      this.inContact.set(device, touching);
      if (touching && !was) {
        out.push({ device, intensity: c.pulseIntensity, durationMs: c.pulseMs });
      } else if (touching) {
        out.push({ device, intensity: Math.min(1, (pull + contact) / c.fullScaleNewtons), durationMs: c.holdMs });
      }
    }
    return out;
  }
}
