// The watch page and mentor console: join with an invite code, watch the room live, steer it as a mentor.
//
// State comes from the server's messages (rehearsal/wire.py): `welcome` (who we are, the room's state, progress,
// annotations, participants), `event`s (commands, people, steps, physics), the snapshot stream (decoded by
// snapshot_decoder.js, acked like a headset), `surface_damage` (burn levels the scene colours), `refused`. Commands are `command` messages; the server decides
// (rehearsal/roles.py): the console is shown to mentors only, but the server refuses whatever a role may not do.
//
// A participant (a welcome with hands: surgeons, the assistant, the scrub nurse) drives their instruments from
// this page: desktop_input.js (mouse, keyboard, gamepad) or a WebXR session (xr_session.js, xr_input.js), through
// participant.js, the port of the Python thin client (netcode/thin_client/CLIENT.md): redundant input packets
// every frame, own instruments drawn from local input in the same frame, held tissue predicted from the grasp's
// response model and reconciled, the rest interpolated behind a jitter-adaptive delay on the synchronised clock.
// Observers and mentors get no instrument controls (and the server refuses their inputs anyway).

import { RoomLink } from './link.js';
import { RoomScene } from './scene.js';
import { SnapshotDecoder } from './snapshot_decoder.js';
import { parseSuture, ThreadBaselineError, ThreadSet } from './thread_decoder.js';
import { DesktopRig, DEVICE_OF_HAND } from './desktop_input.js';
import { magnitude, parseForces } from './forces.js';
import { ParticipantClient } from './participant.js';
import { quatMul } from './poses.js';
import { HapticMapper, xrDevicePoses } from './xr_input.js';
import { playHaptics, startSession, supportedModes } from './xr_session.js';

const SNAPSHOT_TYPES = new Set(['snap_config', 'snap_topology', 'snap_predictor', 'snapshot']);
const MAX_EVENTS = 200;
const RESYNC_INTERVAL_MS = 1000;
// A snap_ack every ACK_EVERY-th snapshot (10 a second at 60 Hz): over a WebSocket a snapshot is a baseline as
// soon as the server wrote it (TCP delivers in order, this page decodes each), so acks only date this page's
// view for the room's health; 32 pages acking every snapshot were most of what observers cost the server.
const ACK_EVERY = 6;
const LOSSY_ACK_EVERY = 2; // while on WebTransport datagrams (link.lossy): acks are what the deltas stand on
const PING_INTERVAL_MS = 1000;
const $ = (id) => document.getElementById(id);
// Participant ids are 63-bit: the decoder gives a BigInt beyond 2^53, so they are keyed by their decimal text.
const pkey = (id) => String(id);

const state = {
  joined: null, // {session, participant (decimal text), role, name, rejoin_code, debrief_key (mentors)}
  me: null, // our participant id (pkey), from the welcome
  roomState: 'not connected',
  transport: 'websocket', // or 'webtransport' while unreliable messages go as datagrams (link.js)
  participants: new Map(), // participant id -> {name, role, objects: {hand|head: rigid id}, health}
  steps: [],
  currentStep: null,
  complications: [], // the scenario's [{id, title, kind}]
  activeComplications: [],
  snapshots: 0,
  suture: null, // the room's needle and thread shapes (snap_suture), if it has a suture
  threadFrames: 0, // snap_thread frames applied
  lastSnapshotAt: null,
  lastResyncAt: 0,
  missingSeen: 0,
  topologyEpoch: null,
  burnMessages: 0, // surface_damage messages applied
  events: [],
  refusals: [],
  annotating: false,
  commandIds: 0,
  pendingCommands: new Map(),
  rtt: null,
  health: null, // the server's newest room health (participants' RTT, loss, snapshot age), if it sends one
  // participant mode (a welcome with hands), else null
  hands: null, // {hand: rigid object id} we drive
  forces: new Map(), // our instrument object id -> {force, grasp, position} (N, m), from `forces`
  grasps: 0, // response models received
  inputsSent: 0,
  snapshotGaps: [], // ms between snapshot frames (the newest 2048), for the network panel and benches
  xr: null, // the immersive session while one runs
  xrModes: [],
  script: null, // a test's or bench's function(localNow) -> {device: pose}, instead of the desktop rig
  frameIndex: 0,
  ownFrames: 0, // frames that drew one of our instruments
  ownDrawnThisFrame: 0, // ... at the pose this very frame sampled (the own-instrument latency is one frame)
};

let participant = null; // ParticipantClient
let rig = null; // DesktopRig
let haptics = null; // HapticMapper
let lastFrameAt = null;
let lastSnapshotFrameAt = null;
const HALF_TURN_Y = [0, 1, 0, 0];

let decoder = new SnapshotDecoder();
let scene = null;
let surfaceDirty = false;
let rigidDirty = false;
let thread = null; // the suture threads' decoders by id (thread_decoder.js ThreadSet), made with the snapshot config
let threadDirty = false;

const link = new RoomLink({
  onJoined: (joined) => {
    state.joined = joined;
    if (joined.rejoin_code) sessionStorage.setItem('rehearsal.rejoin', joined.rejoin_code);
    $('join').hidden = true;
    $('who').textContent = `${joined.name} · ${joined.role.replace(/_/g, ' ')}`;
    $('console').hidden = joined.role !== 'mentor';
    history.replaceState(null, '', location.pathname); // the code leaves the address bar (and screenshots)
    setLinkState('connected');
  },
  onMessage: (type, fields) => onMessage(type, fields),
  onTransport: (text) => {
    state.transport = link.transportName;
    setLinkState(`connected: ${text}`);
  },
  onClosed: ({ code, reason, refusal, wasJoined }) => {
    const why = refusal || reason || `connection closed (${code})`;
    setLinkState(`disconnected: ${why}`);
    if (!wasJoined) {
      sessionStorage.removeItem('rehearsal.rejoin');
      $('join').hidden = false;
      $('join-error').textContent = why;
      $('join-button').disabled = false;
    } else {
      notice(why);
    }
  },
});

function setLinkState(text) {
  $('link-state').textContent = text;
}

function notice(text, info = false) {
  const el = $('notice');
  el.textContent = text;
  el.className = info ? 'info' : '';
  el.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { el.hidden = true; }, 6000);
}

function setRoomState(value) {
  if (!value) return;
  state.roomState = value;
  const badge = $('room-state');
  badge.textContent = value;
  badge.className = `badge ${value}`;
  if (value === 'ended') {
    // The server refuses every command of an ended room; the console says so instead of offering them.
    for (const el of $('console').querySelectorAll('button, select, input')) el.disabled = true;
    showDebriefLink();
  }
}

/** A mentor's page links the session's debrief when it ends: the key (read-only, this session, expiring; see
 *  rehearsal/web/debrief_access.py) rides in the fragment, which the browser sends to no server. */
function showDebriefLink() {
  const joined = state.joined;
  if (!joined || !joined.debrief_key) return;
  const a = $('debrief-link');
  a.href = `/debrief?session=${encodeURIComponent(joined.session)}#key=${encodeURIComponent(joined.debrief_key)}`;
  a.hidden = false;
}

// ------------------------------------------------------------------ messages

function onMessage(type, fields) {
  if (SNAPSHOT_TYPES.has(type)) {
    onSnapshotMessage(type, fields);
    return;
  }
  switch (type) {
    case 'welcome': onWelcome(fields); break;
    case 'event': onEvent(fields); break;
    case 'refused': onRefused(fields); break;
    case 'surface_damage': onSurfaceDamage(fields); break;
    case 'pong': state.rtt = (performance.now() / 1000) - fields.time; break;
    case 'input_ack': if (participant) participant.onInputAck(fields, performance.now() / 1000); break;
    case 'grasp':
      if (participant && participant.onGrasp(fields, performance.now() / 1000)) state.grasps += 1;
      break;
    case 'release': if (participant) participant.onRelease(fields.grasp_id, performance.now() / 1000); break;
    case 'forces': onForces(fields); break;
    case 'snap_suture': onSuture(fields); break;
    case 'snap_thread': onThread(fields); break;
    default: break;
  }
}

function onSnapshotMessage(type, fields) {
  let applied;
  try {
    applied = decoder.onMessage(type, fields);
  } catch (err) {
    link.reportError(`snapshot decoder: ${type}: ${err && err.message}`);
    requestResync(`rejected ${type}`);
    return;
  }
  if (type === 'snap_topology') {
    surfaceDirty = true;
    state.topologyEpoch = null; // rebuild the geometry at the next frame
  }
  if (participant && applied.length) participant.onSnapshot(decoder, performance.now() / 1000);
  if (type === 'snapshot') {
    const now = performance.now();
    if (lastSnapshotFrameAt !== null) {
      state.snapshotGaps.push(now - lastSnapshotFrameAt);
      if (state.snapshotGaps.length > 2048) state.snapshotGaps.shift();
    }
    lastSnapshotFrameAt = now;
    state.snapshots += 1;
    state.lastSnapshotAt = performance.now();
    surfaceDirty = true;
    rigidDirty = true;
    // over datagrams snapshots get lost: the server's deltas need acks (each one names the 32 before it)
    const every = link.lossy ? LOSSY_ACK_EVERY : ACK_EVERY;
    const ack = state.snapshots % every === 1 % every ? decoder.ackFields() : null;
    if (ack) link.send('snap_ack', ack);
  }
  const missing = decoder.missingBaselines || 0; // a counter: it grows when a delta's baseline is gone
  if (missing > state.missingSeen) {
    state.missingSeen = missing;
    requestResync('missing baseline');
  }
}

/** The room's suture: its needle's shape; a new thread stream starts (full first). */
function onSuture(fields) {
  let suture;
  try {
    suture = parseSuture(fields);
  } catch (err) {
    link.reportError(`snap_suture: ${err && err.message}`);
    return;
  }
  state.suture = suture;
  if (thread) thread.reset();
  if (scene) scene.setSuture(suture);
}

/** One frame of the suture thread (SNAPSHOT.md 6); over datagrams its deltas need thread_acks, as snapshots do. */
function onThread(fields) {
  if (!decoder.config) return; // before snap_config: the server sends that first
  if (!thread || thread.config !== decoder.config) thread = new ThreadSet(decoder.config); // a new snap_config: afresh
  let id;
  try {
    id = thread.decoder(fields.thread).apply(fields.data) ? fields.thread ?? 0 : null; // fields.thread absent: 0
    if (id !== null) threadDirty = true;
  } catch (err) {
    if (err instanceof ThreadBaselineError) {
      thread.reset();
      requestResync('thread baseline');
    } else {
      link.reportError(`thread decoder: ${err && err.message}`);
    }
    return;
  }
  state.threadFrames += 1;
  if (link.lossy && state.threadFrames % LOSSY_ACK_EVERY === 0) {
    for (const [tid, dec] of thread.decoders) {
      const ack = dec.ackFields();
      if (ack) link.send('thread_ack', tid ? { ...ack, thread: tid } : ack);
    }
  }
}

/** Ask for full records of everything (snap_resync: its reason is required, at most 256 characters). */
function requestResync(reason) {
  const now = performance.now();
  if (now - state.lastResyncAt < RESYNC_INTERVAL_MS) return;
  state.lastResyncAt = now;
  link.send('snap_resync', { reason });
}

/** Burn levels of surface vertices (little-endian uint32 mesh vertex ids, one level byte each) to the scene. */
function onSurfaceDamage(fields) {
  const { vertices, levels } = fields;
  if (vertices.length !== 4 * levels.length) {
    link.reportError(`surface_damage: ${vertices.length} id bytes for ${levels.length} levels`);
    return;
  }
  const view = new DataView(vertices.buffer, vertices.byteOffset, vertices.byteLength);
  const ids = new Uint32Array(levels.length);
  for (let i = 0; i < ids.length; i += 1) ids[i] = view.getUint32(4 * i, true);
  state.burnMessages += 1;
  scene.setBurns(ids, levels, fields.reset);
}

/** Our instruments' forces: the HUD shows them, an XR session's controllers vibrate with them. */
function onForces(fields) {
  if (!participant) return;
  let report;
  try {
    report = parseForces(fields);
  } catch (err) {
    link.reportError(`forces: ${err && err.message}`);
    return;
  }
  const byDevice = new Map();
  for (const [hand, oid] of Object.entries(state.hands || {})) {
    const f = report.byObject.get(Number(oid));
    if (!f) continue;
    state.forces.set(Number(oid), f);
    byDevice.set(DEVICE_OF_HAND[hand], f);
  }
  const pulses = haptics.update(byDevice);
  if (state.xr && state.xr.controllers) state.xr.played = (state.xr.played || 0) + playHaptics(pulses, state.xr.controllers);
}

/** The welcome gave us hands: this page drives them (desktop rig, or XR once a session starts). */
function startParticipant(hands) {
  state.hands = { ...hands };
  const names = Object.keys(hands).filter((h) => h in DEVICE_OF_HAND);
  participant = new ParticipantClient({ devices: [0, ...names.map((h) => DEVICE_OF_HAND[h])] });
  for (const hand of names) participant.own(hands[hand], DEVICE_OF_HAND[hand]);
  rig = new DesktopRig(names);
  haptics = new HapticMapper();
  scene.setDriveMode(true);
  $('instruments').hidden = false;
  supportedModes().then((modes) => {
    state.xrModes = modes;
    $('btn-xr-vr').hidden = !modes.includes('immersive-vr');
    $('btn-xr-ar').hidden = !modes.includes('immersive-ar');
  });
}

function stopParticipant() {
  participant = null;
  rig = null;
  state.hands = null;
  state.forces.clear();
  lastFrameAt = null;
  if (scene) scene.setDriveMode(false);
  $('instruments').hidden = true;
}

function participantEntry(id, info) {
  const key = pkey(id);
  const entry = state.participants.get(key) || { id, name: '?', role: 'observer', objects: {} };
  if (info.name) entry.name = info.name;
  if (info.role) entry.role = info.role;
  const objects = info.objects || info.hands;
  if (objects) entry.objects = { ...entry.objects, ...objects };
  state.participants.set(key, entry);
  for (const [part, oid] of Object.entries(entry.objects)) {
    if (scene) scene.setOwner(oid, { name: entry.name, role: entry.role, part });
  }
  return entry;
}

function onWelcome(w) {
  state.me = pkey(w.participant);
  setRoomState(w.state);
  for (const p of w.participants || []) participantEntry(p.participant, p);
  participantEntry(w.participant, { name: w.name, role: w.role, hands: w.hands || {} });
  if (w.hands && Object.keys(w.hands).length && !participant) startParticipant(w.hands);
  applyProgress(w.progress || {});
  if (Array.isArray(w.complications)) state.complications = w.complications;
  else if (w.progress && w.progress.complications && Array.isArray(w.progress.complications.available)) {
    state.complications = w.progress.complications.available;
  }
  if (scene) scene.clearAnnotations();
  for (const a of w.annotations || []) if (scene) scene.addAnnotation(a.position, a.text, a.by);
  renderComplications();
  renderPanels();
}

function applyProgress(progress) {
  if (Array.isArray(progress.steps)) state.steps = progress.steps;
  if ('current_step' in progress) state.currentStep = progress.current_step;
  const c = progress.complications;
  if (c && Array.isArray(c.active)) state.activeComplications = c.active;
  if (c && Array.isArray(c.available)) state.complications = c.available;
}

function nameOf(id) {
  const p = state.participants.get(pkey(id));
  return p ? p.name : (id === undefined || id === null ? 'the room' : `#${id}`);
}

function onEvent(e) {
  const d = e.detail || {};
  if (d.state) setRoomState(d.state);
  switch (e.kind) {
    case 'joined': participantEntry(d.participant, d); break;
    case 'left': {
      const p = state.participants.get(pkey(d.participant));
      if (p) p.left = true;
      break;
    }
    case 'remove_participant': state.participants.delete(pkey(d.who)); break;
    case 'ended': setRoomState('ended'); break;
    case 'annotate':
      if (d.kind === 'clear') scene.clearAnnotations();
      else if (d.kind !== 'pointer' && Array.isArray(d.position)) scene.addAnnotation(d.position, d.text, e.by);
      break;
    case 'step_completed':
    case 'step_violated':
      if (d.id) {
        const i = state.steps.findIndex((s) => s.id === d.id);
        if (i >= 0) state.steps[i] = { ...state.steps[i], ...d };
      }
      if (d.current_step !== undefined) state.currentStep = d.current_step;
      break;
    case 'complication_started':
      if (d.complication && !state.activeComplications.includes(d.complication)) state.activeComplications.push(d.complication);
      break;
    case 'world_reset':
      state.activeComplications = [];
      break;
    case 'take_over_instrument':
    case 'hold_retractor':
    case 'hand_instrument':
      if (d.object !== undefined) {
        const who = e.kind === 'hand_instrument' ? d.to : e.by;
        const hand = d.hand || (e.kind === 'hold_retractor' ? 'left' : 'right');
        if (who !== undefined) participantEntry(who, { objects: { [hand]: d.object } });
      }
      break;
    case 'room_health':
      state.health = d;
      break;
    case 'roster':
      for (const p of d.participants || []) participantEntry(p.participant, p);
      if (Array.isArray(d.complications)) {
        state.complications = d.complications;
        renderComplications();
      }
      break;
    default: break;
  }
  if (e.kind !== 'room_health' && e.kind !== 'roster') logEvent(e);
  renderPanels();
}

function describe(e) {
  const d = e.detail || {};
  switch (e.kind) {
    case 'joined': return `${d.name} joined as ${String(d.role).replace(/_/g, ' ')}`;
    case 'left': return `${nameOf(d.participant)} left`;
    case 'annotate': return `${nameOf(e.by)} annotated${d.text ? `: ${d.text}` : ''}`;
    case 'remove_participant': return `${nameOf(e.by)} removed ${nameOf(d.who)}`;
    case 'inject_complication': return `${nameOf(e.by)} injected ${d.complication}`;
    case 'complication_started': return `complication: ${d.title || d.complication}`;
    case 'step_completed': return `step done: ${d.title || d.id}`;
    case 'step_violated': return `step violated: ${d.title || d.id}`;
    default: return `${e.kind}${e.by !== undefined ? ` by ${nameOf(e.by)}` : ''}`;
  }
}

function logEvent(e) {
  state.events.push(e);
  if (state.events.length > MAX_EVENTS) state.events.shift();
  const li = document.createElement('li');
  li.textContent = `${fmtClock(e)}  ${describe(e)}`;
  li.dataset.kind = e.kind;
  const list = $('events');
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function onRefused(r) {
  state.refusals.push(r);
  if (state.refusals.length > 50) state.refusals.shift();
  const what = r.id !== undefined && state.pendingCommands.has(r.id) ? state.pendingCommands.get(r.id) : r.request;
  if (r.request === 'connect') {
    $('join-error').textContent = r.reason;
    return;
  }
  notice(`refused (${what}): ${r.reason}`);
}

// ------------------------------------------------------------------ commands

function command(action, args) {
  state.commandIds += 1;
  const id = state.commandIds;
  state.pendingCommands.set(id, action);
  if (state.pendingCommands.size > 64) state.pendingCommands.delete(state.pendingCommands.keys().next().value);
  const fields = { action, id };
  if (args && Object.keys(args).length) fields.args = args;
  if (!link.send('command', fields)) notice('not connected');
  return id;
}

function wireConsole() {
  for (const id of ['btn-pause', 'btn-resume', 'btn-reset']) {
    const button = $(id);
    button.addEventListener('click', () => command(button.dataset.action));
  }
  $('btn-inject').addEventListener('click', () => {
    const complication = $('complication').value;
    if (complication) command('inject_complication', { complication });
  });
  $('btn-annotate').addEventListener('click', () => {
    state.annotating = !state.annotating;
    $('btn-annotate').setAttribute('aria-pressed', String(state.annotating));
  });
  $('btn-clear-annotations').addEventListener('click', () => command('annotate', { kind: 'clear' }));
  $('btn-takeover').addEventListener('click', () => command('take_over_instrument', { hand: $('takeover-hand').value }));
  $('btn-release').addEventListener('click', () => command('take_over_instrument', { hand: $('takeover-hand').value, release: true }));
  $('btn-end').addEventListener('click', () => {
    if (window.confirm('End the session for everybody?')) command('end_room');
  });
  $('participants').addEventListener('click', (event) => {
    const who = event.target.dataset && event.target.dataset.remove;
    const entry = who ? state.participants.get(who) : undefined;
    if (entry && window.confirm(`Remove ${entry.name} from the session?`)) command('remove_participant', { who: entry.id });
  });
  scene.renderer.domElement.addEventListener('click', (event) => {
    if (!state.annotating) return;
    const point = scene.pick(event.clientX, event.clientY);
    if (!point) {
      notice('click on the tissue to annotate', true);
      return;
    }
    command('annotate', { kind: 'marker', position: point, text: $('annotation-text').value || '' });
  });
}

// ------------------------------------------------------------------ panels

function renderComplications() {
  const select = $('complication');
  select.replaceChildren();
  for (const c of state.complications) {
    const option = document.createElement('option');
    option.value = c.id;
    option.textContent = c.title ? `${c.title}` : c.id;
    select.appendChild(option);
  }
  $('btn-inject').disabled = state.complications.length === 0 || state.roomState === 'ended';
}

function skillText(skill) {
  const lines = [];
  for (const [hand, h] of Object.entries(skill.hands || {})) {
    const metrics = Object.entries(h.metrics || {}).map(([k, v]) => `${k} ${v === null ? '–' : v}`).join(', ');
    lines.push(`${hand}: ${h.passed ? 'pass' : 'fail'} (${metrics})`);
  }
  return lines.join('\n');
}

// An event's time on the session's clock (m:ss since the room was created), as the debrief shows it.
function fmtClock(e) {
  const t = Number(e.session_time);
  if (!Number.isFinite(t) || t < 0) return '–:––';
  const whole = Math.floor(t);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, '0')}`;
}

function fmtMs(seconds) {
  return Number.isFinite(seconds) ? `${(seconds * 1000).toFixed(0)} ms` : '–';
}

function renderPanels() {
  const steps = $('steps');
  steps.replaceChildren();
  for (const s of state.steps) {
    const li = document.createElement('li');
    li.textContent = `${s.title || s.id} — ${s.status || 'pending'}`;
    li.className = `${s.status || ''} ${s.id === state.currentStep ? 'current' : ''}`;
    li.dataset.step = s.id;
    steps.appendChild(li);
  }
  $('complications').textContent = state.activeComplications.length ? `active: ${state.activeComplications.join(', ')}` : '';
  const health = new Map();
  for (const h of (state.health && state.health.participants) || []) health.set(pkey(h.participant), h);
  const body = $('participants').querySelector('tbody');
  body.replaceChildren();
  const mentor = state.joined && state.joined.role === 'mentor';
  for (const [id, p] of state.participants) {
    if (p.left) continue;
    const h = health.get(id) || {};
    const tr = document.createElement('tr');
    tr.dataset.participant = String(id);
    const forces = h.forces && Object.keys(h.forces).length
      ? Object.entries(h.forces).map(([hand, f]) => `${hand[0].toUpperCase()} ${Number(f).toFixed(2)} N`).join(' ') : '–';
    const skill = state.health && state.health.skills ? state.health.skills[id] : undefined;
    const verdict = skill === undefined ? '–' : (skill.passed ? 'pass' : 'fail');
    const cells = [p.name, p.role.replace(/_/g, ' '), fmtMs(h.rtt), Number.isFinite(h.loss) ? `${(h.loss * 100).toFixed(1)} %` : '–',
      fmtMs(h.snapshot_age), forces, verdict];
    if (skill !== undefined) tr.title = skillText(skill);
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.appendChild(td);
    }
    const td = document.createElement('td');
    if (mentor && state.me !== null && id !== state.me) {
      const b = document.createElement('button');
      b.className = 'small danger';
      b.textContent = 'remove';
      b.dataset.remove = id;
      td.appendChild(b);
    }
    tr.appendChild(td);
    body.appendChild(tr);
  }
  const me = state.lastSnapshotAt === null ? '–' : `${((performance.now() - state.lastSnapshotAt) / 1000).toFixed(2)} s`;
  $('metrics').textContent = `this page: RTT ${fmtMs(state.rtt)}, last snapshot ${me} ago, ${state.snapshots} snapshots`;
  const select = $('view-from');
  const current = select.value;
  const options = [['', 'orbit camera']];
  for (const [, p] of state.participants) {
    const head = p.objects ? p.objects.head : undefined;
    if (head !== undefined && !p.left && scene && scene.objects.has(Number(head))) options.push([String(head), `${p.name}'s eyes`]);
  }
  if (select.options.length !== options.length) {
    select.replaceChildren(...options.map(([value, text]) => Object.assign(document.createElement('option'), { value, textContent: text })));
    select.value = current;
  }
}

// ------------------------------------------------------------------ frames

/** The head's pose from the camera (a headset looks along +z, a three.js camera along -z). */
function cameraHead() {
  const c = scene.camera;
  const q = c.quaternion;
  return { position: c.position.toArray(), rotation: quatMul([q.x, q.y, q.z, q.w], HALF_TURN_Y) };
}

/** One participant frame: this frame's input (script, XR devices or the desktop rig) sent, then drawn at once. */
function participantFrame(devicePoses) {
  const now = performance.now() / 1000;
  const dt = lastFrameAt === null ? 0 : now - lastFrameAt;
  lastFrameAt = now;
  let poses = devicePoses;
  if (!poses && state.script) poses = state.script(now);
  if (!poses) {
    const pads = navigator.getGamepads ? [...navigator.getGamepads()].filter(Boolean) : [];
    rig.gamepad(pads.length ? { axes: [...pads[0].axes], buttons: [...pads[0].buttons] } : null);
    rig.step(dt);
    poses = rig.poses(cameraHead());
  }
  const packet = participant.track(now, poses);
  if (packet && link.send('input', { p: packet })) state.inputsSent += 1;
  const shown = participant.render(now, () => decoder.surface().positions);
  if (decoder.epoch !== null && decoder.epoch !== undefined && (state.topologyEpoch !== decoder.epoch || scene.vertexCount === 0)) {
    scene.setTopology(decoder.surface().ids, decoder.triangles(), decoder.epoch);
    state.topologyEpoch = decoder.epoch;
  }
  if (shown.positions && shown.positions.length === 3 * scene.vertexCount && shown.sources.missing === 0) {
    scene.setPositions(Float32Array.from(shown.positions));
  }
  for (const [hand, oid] of Object.entries(state.hands)) {
    const pose = poses[DEVICE_OF_HAND[hand]];
    if (pose && !shown.rigid.has(Number(oid))) shown.rigid.set(Number(oid), { kind: 'instrument', ...pose, source: 'tracked' });
  }
  const mine = state.participants.get(state.me);
  const head = mine && mine.objects ? mine.objects.head : undefined;
  if (head !== undefined) shown.rigid.delete(Number(head)); // our own head is the camera: not drawn in our view
  scene.setRigid(shown.rigid);
  if (threadDirty) {
    scene.setThreads(thread.points());
    threadDirty = false;
  }
  for (const [hand, oid] of Object.entries(state.hands)) { // drawn from this frame's input, before any echo?
    const pose = poses[DEVICE_OF_HAND[hand]];
    const drawn = scene.objects.get(Number(oid));
    if (!pose || !drawn) continue;
    state.ownFrames += 1;
    const p = pose.position;
    if (drawn.position.x === p[0] && drawn.position.y === p[1] && drawn.position.z === p[2]) state.ownDrawnThisFrame += 1;
  }
  state.lastRender = { sources: shown.sources, delay: shown.delay, latency: shown.latency, renderTime: shown.renderTime, serverNow: shown.serverNow };
  state.lastPoses = poses;
  state.frameIndex += 1;
}

function frame() {
  if (state.xr) return; // the XR session's animation loop draws (xrFrame)
  if (participant) {
    try {
      participantFrame(null);
      scene.render();
    } catch (err) {
      link.reportError(`render: ${err && err.message}`);
    }
    requestAnimationFrame(frame);
    return;
  }
  try {
    if (surfaceDirty && decoder.epoch !== null && decoder.epoch !== undefined) {
      if (state.topologyEpoch !== decoder.epoch || scene.vertexCount === 0) {
        const { ids } = decoder.surface();
        scene.setTopology(ids, decoder.triangles(), decoder.epoch);
        state.topologyEpoch = decoder.epoch;
      }
      const { positions } = decoder.surface();
      scene.setPositions(positions);
      surfaceDirty = false;
    }
    if (rigidDirty) {
      scene.setRigid(decoder.rigid());
      rigidDirty = false;
    }
    if (threadDirty) {
      scene.setThreads(thread.points());
      threadDirty = false;
    }
    scene.render();
  } catch (err) {
    link.reportError(`render: ${err && err.message}`);
  }
  requestAnimationFrame(frame);
}

/** One XR frame: the headset is the head, the controllers the hands; three.js renders the stereo views. */
function xrFrame(data) {
  state.xr.controllers = data.controllers;
  state.xr.frames = (state.xr.frames || 0) + 1;
  try {
    participantFrame(xrDevicePoses(data));
    scene.render();
  } catch (err) {
    link.reportError(`xr render: ${err && err.message}`);
  }
}

async function enterXR(mode) {
  if (!participant || state.xr) return;
  try {
    state.xr = { mode };
    const session = await startSession(mode, scene, xrFrame);
    state.xr.session = session;
    session.addEventListener('end', () => {
      state.xr = null;
      requestAnimationFrame(frame);
    });
  } catch (err) {
    state.xr = null;
    notice(`could not start ${mode}: ${err && err.message}`);
  }
}

function renderInstruments() {
  if (!participant) return;
  const lines = [];
  for (const [hand, oid] of Object.entries(state.hands)) {
    const pose = state.lastPoses && state.lastPoses[DEVICE_OF_HAND[hand]];
    const f = state.forces.get(Number(oid));
    const jaw = pose ? `${pose.jaw.toFixed(2)} rad` : '–';
    const force = f ? `${magnitude(f.force).toFixed(2)} N contact, ${magnitude(f.grasp).toFixed(2)} N grasp` : '–';
    lines.push(`${hand}${rig && rig.active === hand ? ' (active)' : ''}: jaw ${jaw}${pose && pose.energy ? ', energized' : ''}; ${force}`);
  }
  const r = state.lastRender;
  if (r) lines.push(`interpolation delay ${fmtMs(r.delay)}, latency ${fmtMs(r.latency)}, predicted patches ${r.sources.predicted}`);
  $('instrument-state').textContent = lines.join('\n');
}

function typing(event) {
  const t = event.target;
  return t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA');
}

const DRIVE_KEYS = new Set(['Space', 'Tab', 'ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight']);

function wireInstruments() {
  window.addEventListener('keydown', (event) => {
    if (!rig || typing(event)) return;
    if (DRIVE_KEYS.has(event.code)) event.preventDefault();
    if (!event.repeat) rig.keyDown(event.code);
  });
  window.addEventListener('keyup', (event) => { if (rig) rig.keyUp(event.code); });
  window.addEventListener('blur', () => { if (rig) rig.keys.clear(); });
  const canvas = scene.renderer.domElement;
  let dragging = false;
  canvas.addEventListener('pointerdown', (event) => {
    if (rig && event.button === 0 && !state.annotating) dragging = true;
  });
  window.addEventListener('pointerup', () => { dragging = false; });
  canvas.addEventListener('pointermove', (event) => {
    if (dragging && rig) rig.drag(event.movementX, event.movementY, event.shiftKey);
  });
  $('btn-xr-vr').addEventListener('click', () => enterXR('immersive-vr'));
  $('btn-xr-ar').addEventListener('click', () => enterXR('immersive-ar'));
}

function join(code, name) {
  $('join-error').textContent = '';
  $('join-button').disabled = true;
  decoder = new SnapshotDecoder();
  stopParticipant(); // a new join's welcome says afresh whether this page drives instruments
  state.missingSeen = 0;
  state.participants.clear();
  state.topologyEpoch = null;
  if (scene) scene.setBurns([], [], true); // a new connection is told the room's burns afresh
  localStorage.setItem('rehearsal.name', name);
  link.connect({ invite: code, name });
}

function start() {
  scene = new RoomScene($('view'), $('labels'));
  wireConsole();
  wireInstruments();
  const params = new URLSearchParams(location.search);
  const code = params.get('code') || '';
  const name = params.get('name') || localStorage.getItem('rehearsal.name') || '';
  link.useWebTransport = params.get('transport') !== 'websocket'; // ?transport=websocket: no datagrams
  const wtPort = Number(params.get('wt_port')); // WebTransport through another port (a relay, a proxy)
  if (Number.isInteger(wtPort) && wtPort > 0 && wtPort < 65536) link.webTransportPort = wtPort;
  $('join-code').value = code;
  $('join-name').value = name;
  $('join-form').addEventListener('submit', (event) => {
    event.preventDefault();
    join($('join-code').value.trim(), $('join-name').value.trim());
  });
  $('view-from').addEventListener('change', () => scene.viewFrom($('view-from').value));
  window.addEventListener('error', (event) => link.reportError(`${event.message} (${event.filename}:${event.lineno})`));
  window.addEventListener('unhandledrejection', (event) => link.reportError(`unhandled: ${event.reason}`));
  setInterval(() => {
    link.send('ping', { time: performance.now() / 1000 });
    renderPanels();
    renderInstruments();
  }, PING_INTERVAL_MS);
  const rejoin = sessionStorage.getItem('rehearsal.rejoin');
  if (code && name) join(code, name);
  else if (rejoin) link.connect({ rejoin_code: rejoin });
  requestAnimationFrame(frame);
}

// For tests and the curious: the page's live state, read-only by convention.
window.rehearsal = {
  state,
  link,
  get decoder() { return decoder; },
  get scene() { return scene; },
  get participant() { return participant; },
  get rig() { return rig; },
  enterXR,
  command,
};

start();
