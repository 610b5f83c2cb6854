// The debrief page: a finished session's timeline, 3D replay (scrub, play, seek to an event), plots of force
// and skill metrics per participant, and the stored pass/fail table. Data from /debrief/api/ID (JSON) and
// /debrief/api/ID/track (the snapshot messages, see rehearsal/debrief.py), both with the session's debrief key
// (a mentor's link: #key=...) or the admin credential.
//
// The track is decoded with the live page's SnapshotDecoder: a seek starts a fresh decoder at the nearest
// keyframe (its prelude: snap_config and a full snap_topology, then a full snapshot) and decodes forward;
// playing on decodes only the messages since the shown frame, skipping later preludes.

import uPlot from 'uplot';
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

const plots = []; // {box, uplot, title, absolute}
const PLOT_HEIGHT = 140;

/** A vertical line at the replay's time (uPlot's draw hook: on its canvas, in its device pixels). */
function timeMarker(u) {
  const x = u.valToPos(state.time, 'x', true);
  const ctx = u.ctx;
  ctx.save();
  ctx.strokeStyle = '#ffffff';
  ctx.lineWidth = Math.max(1, window.devicePixelRatio || 1);
  ctx.beginPath();
  ctx.moveTo(x, u.bbox.top);
  ctx.lineTo(x, u.bbox.top + u.bbox.height);
  ctx.stroke();
  ctx.restore();
}

/** One participant's hand's plot (uPlot, vendored): time on x; the force in newtons, or each skill metric
 *  scaled to its largest value so they share one axis (the legend shows the raw values at the cursor). */
function makePlot(box, title, lanes, absolute) {
  const t = state.summary.series.t;
  const scaled = lanes.map((lane) => {
    let max = 0;
    for (const v of lane.values) if (v !== null && v > max) max = v;
    const k = absolute || max <= 0 ? 1 : 1 / max;
    return { ...lane, max, y: t.map((_, i) => (lane.values[i] === null || lane.values[i] === undefined ? null : lane.values[i] * k)) };
  });
  const opts = {
    title,
    width: box.clientWidth || 600,
    height: PLOT_HEIGHT,
    scales: { x: { time: false, range: [0, Math.max(state.summary.simulated_seconds, 1e-6)] }, y: absolute ? {} : { range: [0, 1.05] } },
    axes: [
      { stroke: '#8b949e', grid: { stroke: '#30363d' }, label: 's' },
      { stroke: '#8b949e', grid: { stroke: '#30363d' }, label: absolute ? 'N' : 'of max', size: 50 },
    ],
    series: [
      { label: 't (s)', value: (u, v) => (v === null ? '-' : v.toFixed(2)) },
      ...scaled.map((lane, j) => ({
        label: absolute ? `${lane.name} (max ${lane.max.toFixed(2)})` : lane.name,
        stroke: LINE_COLOURS[j % LINE_COLOURS.length],
        width: 1.5,
        spanGaps: false,
        value: (u, v) => (v === null || v === undefined ? '-' : Number(absolute ? v : v * lane.max).toPrecision(4)),
      })),
    ],
    cursor: { drag: { x: false, y: false } },
    hooks: { draw: [timeMarker] },
  };
  return new uPlot(opts, [t, ...scaled.map((lane) => lane.y)], box);
}

function buildPlots() {
  const box = $('plots');
  box.textContent = '';
  for (const plot of plots.splice(0)) plot.uplot.destroy();
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
        const holder = document.createElement('div');
        holder.className = 'plot';
        holder.dataset.participant = pid;
        holder.dataset.hand = hand;
        holder.dataset.plot = plot.absolute ? 'force' : 'metrics';
        box.append(holder);
        plots.push({ ...plot, box: holder, uplot: makePlot(holder, plot.title, plot.lanes, plot.absolute) });
      }
    }
  }
}

/** Redraw the plots' time marker (after a seek); ``resized``: fit them to their boxes' width first. */
function drawPlots(resized = false) {
  for (const plot of plots) {
    if (resized) plot.uplot.setSize({ width: plot.box.clientWidth || 600, height: PLOT_HEIGHT });
    else plot.uplot.redraw(false, false);
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
  window.addEventListener('resize', () => { drawPlots(true); scene.render(); });
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
  // each plot: which, its series' labels and how many points each draws (uPlot's data)
  plots: () => plots.map((p) => ({
    plot: p.box.dataset.plot,
    labels: p.uplot.series.slice(1).map((x) => x.label),
    points: p.uplot.data.slice(1).map((ys) => ys.filter((v) => v !== null && v !== undefined).length),
  })),
};
main();
