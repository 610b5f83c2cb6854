// The debrief page: a finished session's timeline, 3D replay (scrub, play, seek to an event), plots of force
// and skill metrics per participant, and the stored pass/fail table. Data from /debrief/api/ID (JSON) and
// /debrief/api/ID/track (the snapshot messages, see rehearsal/debrief.py), both with the session's debrief key
// (a mentor's link: #key=...) or the admin credential.
//
// The track is decoded with the live page's SnapshotDecoder: a seek starts a fresh decoder at the nearest
// keyframe (its prelude: snap_config and a full snap_topology, then a full snapshot) and decodes forward;
// playing on decodes only the messages since the shown frame, skipping later preludes.

import { RoomScene } from './scene.js';
import { SnapshotDecoder } from './snapshot_decoder.js';

const PRELUDE = 1;
const STORAGE_KEY = 'rehearsal.admin';
const FORWARD_LIMIT = 200; // frames decoded forward before a seek restarts from a keyframe instead
const COLOURS = {
  cut: '#ff7b72', burn: '#ffa657', tear: '#f85149', grasp: '#79c0ff', release: '#4d7ea8',
  step_completed: '#7fd18b', step_violated: '#d29922', complication_started: '#d2a8ff',
  complication_failed: '#8b949e', bleeding_stopped: '#a5d6ff', world_reset: '#ffffff',
  annotation: '#e3b341', command: '#c9d1d9',
};
const LINE_COLOURS = ['#79c0ff', '#7fd18b', '#d2a8ff', '#ffa657', '#ff7b72', '#e3b341'];

const $ = (id) => document.getElementById(id);

// State the tests read too (window.debrief).
const state = {
  summary: null,
  messages: [], // [{flag, bytes}]
  frames: [], // [[time, message index]]
  keyframes: [],
  decoder: null,
  shownFrame: -1, // the frame the decoder stands at
  shownMessage: -1, // the last message it was fed
  epoch: null,
  time: 0,
  playing: false,
  errors: [],
};

function showError(text) {
  const box = $('error');
  box.textContent = text;
  box.hidden = false;
  state.errors.push(text);
}

/** A debrief link's key (``#key=...``: a mentor's link, this session only; rehearsal/web/debrief_access.py). */
function debriefKey() {
  return new URLSearchParams(window.location.hash.slice(1)).get('key') || '';
}

function credential() {
  return sessionStorage.getItem(STORAGE_KEY) || '';
}

function authorization() {
  const key = debriefKey();
  return key ? `Debrief ${key}` : `Bearer ${credential()}`;
}

async function api(path, binary = false) {
  const response = await fetch(path, { headers: { Authorization: authorization() } });
  if (!response.ok) {
    let text = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) text = `${response.status}: ${body.error}`;
    } catch (_) { /* not JSON */ }
    const error = new Error(text);
    error.status = response.status;
    throw error;
  }
  return binary ? new Uint8Array(await response.arrayBuffer()) : response.json();
}

function parseTrack(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out = [];
  let pos = 0;
  while (pos < data.length) {
    if (pos + 5 > data.length) throw new Error('the track is cut inside a message header');
    const flag = view.getUint8(pos);
    const length = view.getUint32(pos + 1);
    pos += 5;
    if (pos + length > data.length) throw new Error('the track is cut inside a message');
    out.push({ flag, bytes: data.subarray(pos, pos + length) });
    pos += length;
  }
  return out;
}

// ------------------------------------------------------------------------------------------ 3D replay

let scene = null;

function frameAt(time) {
  const frames = state.frames;
  let lo = 0;
  let hi = frames.length - 1;
  if (hi < 0 || time < frames[0][0]) return 0;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (frames[mid][0] <= time) lo = mid; else hi = mid - 1;
  }
  return lo;
}

function feed(from, to, skipPrelude) {
  for (let i = from; i <= to; i += 1) {
    const m = state.messages[i];
    if (skipPrelude && m.flag === PRELUDE) continue;
    try {
      state.decoder.onBytes(m.bytes);
    } catch (error) {
      showError(`replay message ${i}: ${error.message}`);
    }
  }
  state.shownMessage = to;
}

function decodeTo(frame) {
  if (!state.frames.length) return;
  const target = state.frames[frame][1];
  const forward = state.decoder && frame >= state.shownFrame && frame - state.shownFrame <= FORWARD_LIMIT;
  if (forward) {
    feed(state.shownMessage + 1, target, true);
  } else {
    let k = 0;
    for (const f of state.keyframes) if (f <= frame) k = f;
    let start = state.frames[k][1];
    while (start > 0 && state.messages[start - 1].flag === PRELUDE) start -= 1;
    state.decoder = new SnapshotDecoder();
    state.epoch = null;
    feed(start, state.frames[k][1], false); // this keyframe's prelude and full snapshot
    if (target > state.frames[k][1]) feed(state.frames[k][1] + 1, target, true);
  }
  state.shownFrame = frame;
  draw();
}

function draw() {
  const decoder = state.decoder;
  if (!decoder || decoder.epoch === null || decoder.epoch === undefined) return;
  if (state.epoch !== decoder.epoch || scene.vertexCount === 0) {
    scene.setTopology(decoder.surface().ids, decoder.triangles(), decoder.epoch);
    state.epoch = decoder.epoch;
  }
  scene.setPositions(decoder.surface().positions);
  scene.setRigid(decoder.rigid());
  scene.render();
  $('triangles').textContent = `${decoder.triangles().length / 3} triangles, epoch ${decoder.epoch}`;
}

function seek(time) {
  const end = state.summary ? state.summary.simulated_seconds : 0;
  state.time = Math.max(0, Math.min(end, Number(time) || 0));
  $('scrubber').value = String(state.time);
  $('clock').textContent = `${state.time.toFixed(2)} s`;
  decodeTo(frameAt(state.time));
  drawCursor();
  drawPlots();
}

function togglePlay() {
  state.playing = !state.playing;
  $('play').textContent = state.playing ? 'pause' : 'play';
  if (!state.playing) return;
  if (state.time >= state.summary.simulated_seconds) seek(0);
  let last = performance.now();
  const step = (now) => {
    if (!state.playing) return;
    const dt = (now - last) / 1000;
    last = now;
    seek(state.time + dt);
    if (state.time >= state.summary.simulated_seconds) { togglePlay(); return; }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

// ------------------------------------------------------------------------------------------ timeline

function describe(e) {
  const who = e.name ? `${e.name}${e.hand ? ` (${e.hand})` : ''}` : (e.participant !== undefined ? `#${e.participant}` : '');
  const d = e.detail || {};
  const subject = d.title || d.step || d.complication || d.id || d.text || d.kind || '';
  const what = [d.action, subject].filter((x) => x !== undefined && x !== '').join(' ');
  return `${e.t.toFixed(2)} s  ${e.kind}${what ? `: ${what}` : ''}${who ? ` by ${who}` : ''}`;
}

function buildTimeline() {
  const bar = $('timeline');
  const list = $('events');
  bar.textContent = '';
  list.textContent = '';
  const end = Math.max(state.summary.simulated_seconds, 1e-6);
  for (const e of state.summary.timeline) {
    const marker = document.createElement('button');
    marker.type = 'button';
    marker.className = 'marker';
    marker.dataset.kind = e.kind;
    marker.dataset.t = String(e.t);
    marker.title = describe(e);
    marker.style.left = `${(100 * e.t) / end}%`;
    marker.style.background = COLOURS[e.kind] || '#8b949e';
    marker.addEventListener('click', () => seek(e.t));
    bar.append(marker);
    const item = document.createElement('li');
    item.textContent = describe(e);
    item.dataset.kind = e.kind;
    item.addEventListener('click', () => seek(e.t));
    list.append(item);
  }
  const cursor = document.createElement('div');
  cursor.className = 'cursor';
  cursor.id = 'timeline-cursor';
  bar.append(cursor);
}

function drawCursor() {
  const cursor = $('timeline-cursor');
  if (cursor) cursor.style.left = `${(100 * state.time) / Math.max(state.summary.simulated_seconds, 1e-6)}%`;
}

// ------------------------------------------------------------------------------------------ plots

const plots = []; // {canvas, lanes: [{name, values}], title}

function buildPlots() {
  const box = $('plots');
  box.textContent = '';
  const people = new Map((state.summary.stored.participants || []).map((p) => [String(p.participant), p]));
  const series = state.summary.series;
  for (const [pid, hands] of Object.entries(series.participants)) {
    const person = people.get(pid) || { name: `#${pid}`, role: '' };
    for (const [hand, lanes] of Object.entries(hands)) {
      const title = `${person.name} (${person.role}), ${hand} hand`;
      const force = { title: `${title}: force on the instrument (N)`, lanes: [{ name: 'force_n', values: lanes.force_n }], absolute: true };
      const metrics = {
        title: `${title}: skill metrics over time (each scaled to its largest value)`,
        lanes: series.metrics.map((m) => ({ name: m, values: lanes[m] || [] })),
        absolute: false,
      };
      for (const plot of [force, metrics]) {
        const heading = document.createElement('div');
        heading.className = 'muted';
        heading.textContent = plot.title;
        const canvas = document.createElement('canvas');
        canvas.dataset.participant = pid;
        canvas.dataset.hand = hand;
        canvas.dataset.plot = plot.absolute ? 'force' : 'metrics';
        box.append(heading, canvas);
        plots.push({ ...plot, canvas });
      }
    }
  }
}

function drawPlots() {
  const t = state.summary.series.t;
  const end = Math.max(state.summary.simulated_seconds, 1e-6);
  for (const plot of plots) {
    const canvas = plot.canvas;
    const w = (canvas.width = canvas.clientWidth || 600);
    const h = (canvas.height = canvas.clientHeight || 120);
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, w, h);
    g.font = '11px sans-serif';
    let legendX = 6;
    plot.lanes.forEach((lane, j) => {
      const values = lane.values;
      let max = 0;
      for (const v of values) if (v !== null && v > max) max = v;
      const scale = max > 0 ? max : 1;
      g.strokeStyle = LINE_COLOURS[j % LINE_COLOURS.length];
      g.beginPath();
      let pen = false;
      values.forEach((v, i) => {
        if (v === null || i >= t.length) { pen = false; return; }
        const x = (t[i] / end) * (w - 1);
        const y = h - 14 - (v / scale) * (h - 28);
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
      });
      g.stroke();
      let now = null;
      for (let i = 0; i < t.length && t[i] <= state.time; i += 1) if (values[i] !== null) now = values[i];
      const label = `${lane.name} ${now === null ? '-' : Number(now).toPrecision(4)}${plot.absolute ? ` (max ${max.toFixed(2)})` : ''}`;
      g.fillStyle = g.strokeStyle;
      g.fillText(label, legendX, 11);
      legendX += g.measureText(label).width + 14;
    });
    const x = (state.time / end) * (w - 1);
    g.strokeStyle = '#ffffff';
    g.beginPath();
    g.moveTo(x, 0);
    g.lineTo(x, h);
    g.stroke();
  }
}

// ------------------------------------------------------------------------------------------ pass / fail

function buildResults() {
  const table = $('results');
  table.textContent = '';
  const people = state.summary.stored.participants || [];
  const checked = new Set();
  for (const p of people) for (const hand of Object.values((p.skills && p.skills.hands) || {})) {
    for (const name of Object.keys(hand.checks || {})) checked.add(name);
  }
  const metrics = [...checked];
  const head = table.insertRow();
  for (const text of ['participant', 'role', 'hand', ...metrics, 'passed']) {
    const th = document.createElement('th');
    th.textContent = text;
    head.append(th);
  }
  for (const p of people) {
    const hands = Object.entries((p.skills && p.skills.hands) || {});
    if (!hands.length) {
      const row = table.insertRow();
      row.dataset.participant = String(p.participant);
      for (const text of [p.name, p.role, '-']) row.insertCell().textContent = text;
      for (let i = 0; i < metrics.length; i += 1) row.insertCell().textContent = '';
      row.insertCell().textContent = 'not scored';
      continue;
    }
    for (const [hand, entry] of hands) {
      const row = table.insertRow();
      row.dataset.participant = String(p.participant);
      row.dataset.hand = hand;
      row.dataset.passed = String(entry.passed);
      for (const text of [p.name, p.role, hand]) row.insertCell().textContent = text;
      for (const name of metrics) {
        const cell = row.insertCell();
        const value = entry.metrics ? entry.metrics[name] : undefined;
        cell.dataset.metric = name;
        cell.dataset.value = value === undefined ? '' : String(value); // exact, as stored
        cell.textContent = value === undefined ? '' : (Number.isInteger(value) ? String(value) : Number(value).toPrecision(4));
        if (name in (entry.checks || {})) cell.className = entry.checks[name] ? 'pass' : 'fail';
      }
      const verdict = row.insertCell();
      verdict.dataset.metric = 'passed';
      verdict.textContent = entry.passed ? 'pass' : 'fail';
      verdict.className = entry.passed ? 'pass' : 'fail';
    }
  }
}

// ------------------------------------------------------------------------------------------ start

async function listSessions() {
  const body = await api('/admin/results');
  const list = $('session-list');
  list.textContent = '';
  for (const r of body.results || []) {
    const item = document.createElement('li');
    const link = document.createElement('a');
    link.href = `/debrief?session=${encodeURIComponent(r.session)}`;
    link.textContent = r.session;
    item.append(link, ` ${r.scenario}, ${r.end_state}, ${r.steps_done} steps done, ${r.violations} violations`);
    list.append(item);
  }
  if (!list.children.length) list.textContent = 'no finished sessions yet';
  $('sessions').hidden = false;
}

async function open(session) {
  const id = encodeURIComponent(session);
  const [summary, track] = await Promise.all([api(`/debrief/api/${id}`), api(`/debrief/api/${id}/track`, true)]);
  state.summary = summary;
  state.messages = parseTrack(track);
  state.frames = summary.track.frames;
  state.keyframes = summary.track.keyframes;
  $('title').textContent = `${summary.session}: ${summary.scenario}, ${summary.simulated_seconds.toFixed(1)} s simulated`;
  const agreement = $('agreement');
  agreement.textContent = summary.agrees ? 'replay agrees with the stored result' : `replay differs for ${summary.mismatches.join(', ')}`;
  agreement.className = `badge ${summary.agrees ? 'ok' : 'bad'}`;
  $('debrief-main').hidden = false;
  scene = new RoomScene($('view'), $('labels'));
  for (const [oid, owner] of Object.entries(summary.track.objects || {})) {
    const person = (summary.stored.participants || []).find((p) => p.participant === owner.participant);
    scene.setOwner(oid, { name: owner.name, role: person ? person.role : '', part: owner.hand });
  }
  const scrubber = $('scrubber');
  scrubber.max = String(summary.simulated_seconds);
  scrubber.addEventListener('input', () => seek(Number(scrubber.value)));
  $('play').addEventListener('click', togglePlay);
  buildTimeline();
  buildPlots();
  buildResults();
  seek(0);
  window.addEventListener('resize', () => { drawPlots(); scene.render(); });
}

async function main() {
  const session = new URLSearchParams(window.location.search).get('session');
  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(STORAGE_KEY, $('credential').value.trim());
    window.location.reload();
  });
  if (!credential() && !(session && debriefKey())) {
    $('login').hidden = false;
    showError('enter the admin credential to open debriefs');
    return;
  }
  try {
    if (session) await open(session);
    else await listSessions();
    document.body.dataset.ready = 'true';
  } catch (error) {
    if (error.status === 401 || error.status === 403) $('login').hidden = false;
    showError(error.message);
    document.body.dataset.ready = 'error';
  }
}

window.debrief = {
  state,
  seek,
  triangleCount: () => (state.decoder ? state.decoder.triangles().length / 3 : 0),
  sceneTriangles: () => (scene ? scene.triangleCount : 0),
};
main();
