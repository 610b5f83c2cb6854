// The WebXR session of a participant's page (immersive-vr, or immersive-ar where the browser has it): the
// browser glue around xr_input.js' pure mapping. three.js' renderer drives the frames (its XR animation loop);
// each frame gives the viewer pose and the controllers' grip poses and gamepads as plain data to
// xrDevicePoses, and haptic pulses go to the controllers' gamepad hapticActuators.

import { DEFAULT_ORIGIN } from './xr_input.js';

export const XR_MODES = Object.freeze(['immersive-vr', 'immersive-ar']);

/** The immersive modes this browser offers (none without navigator.xr or a secure context). */
export async function supportedModes(xr = navigator.xr) {
  if (!xr || typeof xr.isSessionSupported !== 'function') return [];
  const out = [];
  for (const mode of XR_MODES) {
    try {
      if (await xr.isSessionSupported(mode)) out.push(mode);
    } catch (err) {
      // a mode the browser refuses to ask about counts as unsupported
    }
  }
  return out;
}

/** Plain frame data for xrDevicePoses from an XRFrame: {viewer, controllers: [{handedness, grip, buttons, source}]}. */
export function frameData(frame, space) {
  const pose = (p) => p && {
    position: [p.transform.position.x, p.transform.position.y, p.transform.position.z],
    orientation: [p.transform.orientation.x, p.transform.orientation.y, p.transform.orientation.z, p.transform.orientation.w],
  };
  const viewer = pose(frame.getViewerPose(space));
  const controllers = [];
  for (const source of frame.session.inputSources) {
    const grip = source.gripSpace ? pose(frame.getPose(source.gripSpace, space)) : null;
    const buttons = source.gamepad ? [...source.gamepad.buttons].map((b) => ({ value: b.value, pressed: b.pressed })) : [];
    controllers.push({ handedness: source.handedness, grip, buttons, source });
  }
  return { viewer, controllers };
}

/** Play the HapticMapper's pulses on the controllers of their hands (device 1 left, 2 right). */
export function playHaptics(pulses, controllers) {
  let played = 0;
  for (const pulse of pulses) {
    const hand = pulse.device === 1 ? 'left' : pulse.device === 2 ? 'right' : null;
    const c = controllers.find((x) => x.handedness === hand);
    const actuators = c && c.source && c.source.gamepad ? c.source.gamepad.hapticActuators : null;
    const actuator = actuators && actuators[0];
    if (!actuator) continue;
    if (typeof actuator.pulse === 'function') actuator.pulse(pulse.intensity, pulse.durationMs);
    else if (typeof actuator.playEffect === 'function') {
      actuator.playEffect('dual-rumble', { duration: pulse.durationMs, strongMagnitude: pulse.intensity, weakMagnitude: pulse.intensity });
    }
    played += 1;
  }
  return played;
}

/** Start an immersive session on the scene's renderer; onFrame(frameData, time) each XR frame. Resolves to the
 *  session; the scene's room is moved to `origin` in the reference space for the session's life. */
export async function startSession(mode, scene, onFrame, { origin = DEFAULT_ORIGIN, xr = navigator.xr } = {}) {
  const session = await xr.requestSession(mode, { optionalFeatures: ['local-floor'] });
  const renderer = scene.renderer;
  renderer.xr.enabled = true;
  renderer.xr.setReferenceSpaceType('local-floor');
  await renderer.xr.setSession(session);
  scene.scene.position.set(origin[0], origin[1], origin[2]);
  renderer.setAnimationLoop((time, frame) => {
    if (frame) onFrame(frameData(frame, renderer.xr.getReferenceSpace()), time);
  });
  session.addEventListener('end', () => {
    renderer.setAnimationLoop(null);
    renderer.xr.enabled = false;
    scene.scene.position.set(0, 0, 0);
  });
  return session;
}
