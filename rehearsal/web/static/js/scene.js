// The 3D view: the tissue surface from the snapshot decoder, instruments with their jaw opening, people's
// heads and hands with name labels, annotations, the suture (the needle as a curved tube, the thread as a
// line); an orbit camera or a participant's eyes. three.js (vendored).
// The tissue is coloured by burn level per mesh vertex (surface_damage messages): healthy -> blanched -> charred,
// kept by vertex id across topology epochs (cuts and burns rebuild the geometry).
//
// Units are metres, +y up (the server's). Rotations from the decoder are (x, y, z, w), as three.js takes them.

import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const { MOUSE } = THREE;

const JAW_LENGTH = 0.012;
const SHAFT_LENGTH = 0.16;
const SHAFT_RADIUS = 0.0025;
const RIGID_INSTRUMENT = 0;
const RIGID_HEAD = 2;
const RIGID_HAND = 3;
const RIGID_NEEDLE = 5;
// the needle's shape until snap_suture says otherwise (physics.needle.NeedleSpec's defaults)
const DEFAULT_SUTURE = Object.freeze({ radius: 0.012, arc: (3 * Math.PI) / 4, wireRadius: 0.0004, threadRadius: 0.00015 });
const MAX_THREAD_POINTS = 4096; // thread_decoder.js MAX_POINTS
const MAX_BURN_LEVEL = 255; // rehearsal.surface_damage.MAX_LEVEL
const MAX_BURNS = 1 << 22; // vertex ids kept with a level (a mesh has fewer vertices; bad input stops here)
// Burn colours (sRGB): healthy tissue, coagulated (blanched) at BLANCHED_AT, charred when burned through.
const HEALTHY = new THREE.Color(0xc8706a);
const BLANCHED = new THREE.Color(0xd9c2a7);
const CHARRED = new THREE.Color(0x2a1c14);
const BLANCHED_AT = 0.45;

/** The tissue colour of a burn level 0..255 (linear RGB, as three.js keeps vertex colours). */
export function burnColour(level, out = new THREE.Color()) {
  const t = Math.min(Math.max(level / MAX_BURN_LEVEL, 0), 1);
  if (t <= BLANCHED_AT) return out.copy(HEALTHY).lerp(BLANCHED, t / BLANCHED_AT);
  return out.copy(BLANCHED).lerp(CHARRED, (t - BLANCHED_AT) / (1 - BLANCHED_AT));
}

function kindNumber(kind) {
  if (typeof kind === 'number') return kind;
  return { instrument: 0, jaw: 1, head: 2, hand: 3, other: 4, needle: 5 }[String(kind).toLowerCase()] ?? 4;
}

export class RoomScene {
  constructor(container, labels) {
    this.container = container;
    this.labelLayer = labels;
    // preserveDrawingBuffer: the page can read its own pixels back (tests, screenshots of the console).
    this.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.setClearColor(0x14181d, 1);
    container.prepend(this.renderer.domElement);
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(45, 1, 0.002, 10);
    this.camera.position.set(0.09, 0.11, 0.13);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.target.set(0, 0.01, 0);
    this.controls.enableDamping = false;
    this.controls.update();
    this.scene.add(new THREE.HemisphereLight(0xdfe8f0, 0x302820, 1.2));
    const key = new THREE.DirectionalLight(0xffffff, 2.0);
    key.position.set(0.3, 0.6, 0.4);
    this.scene.add(key);
    const table = new THREE.Mesh(
      new THREE.PlaneGeometry(0.4, 0.4),
      new THREE.MeshStandardMaterial({ color: 0x2b3a44, roughness: 0.9 }),
    );
    table.rotation.x = -Math.PI / 2;
    table.position.y = -0.0005;
    this.scene.add(table);

    this.tissueGeometry = new THREE.BufferGeometry();
    this.tissue = new THREE.Mesh(
      this.tissueGeometry,
      new THREE.MeshStandardMaterial({
        color: 0xffffff, vertexColors: true, roughness: 0.55, metalness: 0.0, side: THREE.DoubleSide,
      }),
    );
    this.tissue.frustumCulled = false;
    this.scene.add(this.tissue);
    this.epoch = null;
    this.indexOf = new Map(); // vertex id -> row in the geometry
    this.burns = new Map(); // mesh vertex id -> burn level 1..255 (absent: 0), whatever the epoch
    this.vertexCount = 0;
    this.triangleCount = 0;
    this.fitted = false;

    this.objects = new Map(); // rigid id -> THREE.Group
    this.suture = DEFAULT_SUTURE; // the needle's and thread's shapes (snap_suture)
    this.threadGeometry = new THREE.BufferGeometry();
    this.threadGeometry.setAttribute('position', new THREE.BufferAttribute(new Float32Array(3 * MAX_THREAD_POINTS), 3));
    this.threadGeometry.setDrawRange(0, 0);
    this.thread = new THREE.Line(this.threadGeometry, new THREE.LineBasicMaterial({ color: 0x8a4fd8 }));
    this.thread.frustumCulled = false; // its bounds change every frame
    this.scene.add(this.thread);
    this.pieces = new Map(); // thread id (1..) -> THREE.Line: the tied pieces cut off the thread (setThreads)
    this.owners = new Map(); // rigid id -> {name, role, part}
    this.annotations = []; // {mesh, label, text}
    this.labels = new Map(); // key -> DOM element
    this.eyes = null; // rigid id of the head whose view the camera takes, or null (orbit)
    this.frames = 0;
    this.raycaster = new THREE.Raycaster();
    this._resize();
    window.addEventListener('resize', () => this._resize());
  }

  _resize() {
    const w = this.container.clientWidth || 640;
    const h = this.container.clientHeight || 480;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
  }

  /** The surface in a new topology epoch: vertex rows by id and the triangle index. */
  setTopology(ids, triangles, epoch) {
    this.indexOf = new Map();
    for (let i = 0; i < ids.length; i += 1) this.indexOf.set(Number(ids[i]), i);
    this.vertexCount = ids.length;
    const flat = [];
    const push = (a, b, c) => {
      const ia = this.indexOf.get(Number(a));
      const ib = this.indexOf.get(Number(b));
      const ic = this.indexOf.get(Number(c));
      if (ia !== undefined && ib !== undefined && ic !== undefined) flat.push(ia, ib, ic);
    };
    if (triangles && triangles.length && Array.isArray(triangles[0])) {
      for (const t of triangles) push(t[0], t[1], t[2]);
    } else if (triangles) {
      for (let i = 0; i + 2 < triangles.length; i += 3) push(triangles[i], triangles[i + 1], triangles[i + 2]);
    }
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute('position', new THREE.BufferAttribute(new Float32Array(ids.length * 3), 3));
    geometry.setAttribute('color', new THREE.BufferAttribute(new Float32Array(ids.length * 3), 3));
    geometry.setIndex(flat);
    this.tissue.geometry.dispose();
    this.tissue.geometry = geometry;
    this.tissueGeometry = geometry;
    this.triangleCount = flat.length / 3;
    this.epoch = epoch;
    this._colourAll();
  }

  /** Burn levels of mesh vertices (ids and levels 0..255 alike long); reset: forget every level first. */
  setBurns(ids, levels, reset) {
    if (reset) this.burns.clear();
    const colour = this.tissueGeometry.getAttribute('color');
    const c = new THREE.Color();
    for (let i = 0; i < ids.length; i += 1) {
      const id = Number(ids[i]);
      const level = levels[i];
      if (level > 0 && (this.burns.size < MAX_BURNS || this.burns.has(id))) this.burns.set(id, level);
      else this.burns.delete(id);
      const row = reset ? undefined : this.indexOf.get(id);
      if (colour && row !== undefined) {
        burnColour(level, c);
        colour.setXYZ(row, c.r, c.g, c.b);
      }
    }
    if (reset) this._colourAll();
    else if (colour) colour.needsUpdate = true;
  }

  /** The burn level the page holds for a mesh vertex (0 when none). */
  burnLevel(id) {
    return this.burns.get(Number(id)) || 0;
  }

  _colourAll() {
    const colour = this.tissueGeometry.getAttribute('color');
    if (!colour) return;
    const c = new THREE.Color();
    for (const [id, row] of this.indexOf) {
      burnColour(this.burns.get(id) || 0, c);
      colour.setXYZ(row, c.r, c.g, c.b);
    }
    colour.needsUpdate = true;
  }

  /** New vertex positions (layout order, metres): normals are recomputed for the lighting. */
  setPositions(positions) {
    const attribute = this.tissueGeometry.getAttribute('position');
    if (!attribute || attribute.count * 3 !== positions.length) return;
    attribute.array.set(positions);
    attribute.needsUpdate = true;
    this.tissueGeometry.computeVertexNormals();
    this.tissueGeometry.computeBoundingSphere();
    if (!this.fitted && this.tissueGeometry.boundingSphere && this.tissueGeometry.boundingSphere.radius > 0) {
      const sphere = this.tissueGeometry.boundingSphere;
      this.controls.target.copy(sphere.center);
      const distance = sphere.radius * 3.2;
      this.camera.position.copy(sphere.center).add(new THREE.Vector3(0.55, 0.6, 0.8).normalize().multiplyScalar(distance));
      this.controls.update();
      this.fitted = true;
    }
  }

  /** Who a rigid object belongs to: {name, role, part: "left" | "right" | "head"}. */
  setOwner(id, owner) {
    this.owners.set(Number(id), owner);
  }

  _instrument() {
    const group = new THREE.Group();
    const steel = new THREE.MeshStandardMaterial({ color: 0xb8c2cc, metalness: 0.8, roughness: 0.3 });
    const shaft = new THREE.Mesh(new THREE.CylinderGeometry(SHAFT_RADIUS, SHAFT_RADIUS, SHAFT_LENGTH, 12), steel);
    shaft.rotation.x = Math.PI / 2; // the cylinder's axis is +y; the instrument's is +z
    shaft.position.z = -SHAFT_LENGTH / 2;
    group.add(shaft);
    const jaws = [];
    for (const side of [1, -1]) {
      const pivot = new THREE.Group();
      const jaw = new THREE.Mesh(new THREE.BoxGeometry(0.0025, 0.0012, JAW_LENGTH), steel);
      jaw.position.z = JAW_LENGTH / 2;
      pivot.add(jaw);
      pivot.userData.side = side;
      group.add(pivot);
      jaws.push(pivot);
    }
    group.userData.jaws = jaws;
    return group;
  }

  /** The needle: a tube along its arc in its own frame (x-y plane, tail at angle 0, tip at `arc`). */
  _needle() {
    const { radius, arc, wireRadius } = this.suture;
    const points = [];
    for (let i = 0; i < 24; i++) {
      const t = (arc * i) / 23;
      points.push(new THREE.Vector3(radius * Math.cos(t), radius * Math.sin(t), 0));
    }
    const tube = new THREE.TubeGeometry(new THREE.CatmullRomCurve3(points), 48, wireRadius, 8, false);
    const mesh = new THREE.Mesh(tube, new THREE.MeshStandardMaterial({ color: 0xd8dde2, metalness: 0.9, roughness: 0.25 }));
    const group = new THREE.Group();
    group.add(mesh);
    return group;
  }

  /** The suture's shapes ({radius, arc, wireRadius, threadRadius}, thread_decoder.js parseSuture): needles redrawn. */
  setSuture(suture) {
    this.suture = suture || DEFAULT_SUTURE;
    for (const [id, group] of this.objects) {
      if (group.userData.kind !== RIGID_NEEDLE) continue;
      this.scene.remove(group);
      this.objects.delete(id); // made again, with the new shape, at the next setRigid
    }
  }

  /** The thread's points (3 per point, metres), or null to hide it. */
  setThread(points) {
    const n = points ? Math.min(points.length / 3, MAX_THREAD_POINTS) : 0;
    const attribute = this.threadGeometry.getAttribute('position');
    for (let i = 0; i < 3 * n; i++) attribute.array[i] = points[i];
    attribute.needsUpdate = true;
    this.threadGeometry.setDrawRange(0, n);
    this.threadPoints = n;
  }

  /** Every thread (Map id -> points, 3 per point): the live one (0) as setThread, the tied pieces as lines of their
   * own (made on first sight; ids are bounded by thread_decoder.js MAX_THREADS); a piece not in the map is hidden. */
  setThreads(threads) {
    this.setThread(threads.get(0) || null);
    for (const [id, line] of this.pieces) {
      if (!threads.has(id)) line.geometry.setDrawRange(0, 0);
    }
    for (const [id, points] of threads) {
      if (id === 0) continue;
      let line = this.pieces.get(id);
      if (!line) {
        const geometry = new THREE.BufferGeometry();
        geometry.setAttribute('position', new THREE.BufferAttribute(new Float32Array(3 * MAX_THREAD_POINTS), 3));
        line = new THREE.Line(geometry, this.thread.material);
        line.frustumCulled = false;
        this.scene.add(line);
        this.pieces.set(id, line);
      }
      const n = Math.min(points.length / 3, MAX_THREAD_POINTS);
      const attribute = line.geometry.getAttribute('position');
      for (let i = 0; i < 3 * n; i++) attribute.array[i] = points[i];
      attribute.needsUpdate = true;
      line.geometry.setDrawRange(0, n);
    }
    this.threadCount = [...threads.keys()].length;
  }

  _marker(color, radius) {
    return new THREE.Mesh(new THREE.SphereGeometry(radius, 16, 12), new THREE.MeshStandardMaterial({ color }));
  }

  /** Rigid objects by id ({kind, position, rotation: [x, y, z, w], jaw}); objects no longer sent are removed. */
  setRigid(rigid) {
    const seen = new Set();
    for (const [rawId, obj] of rigid) {
      const id = Number(rawId);
      seen.add(id);
      let group = this.objects.get(id);
      const kind = kindNumber(obj.kind);
      if (!group) {
        if (kind === RIGID_INSTRUMENT) group = this._instrument();
        else if (kind === RIGID_HEAD) group = this._marker(0x6fa8dc, 0.012);
        else if (kind === RIGID_HAND) group = this._marker(0x93c47d, 0.007);
        else if (kind === RIGID_NEEDLE) group = this._needle();
        else group = this._marker(0x999999, 0.005);
        group.userData.kind = kind;
        this.objects.set(id, group);
        this.scene.add(group);
      }
      const p = obj.position;
      group.position.set(p[0], p[1], p[2]);
      const q = obj.rotation;
      if (q) group.quaternion.set(q[0], q[1], q[2], q[3]);
      const jaws = group.userData.jaws;
      if (jaws) {
        const jaw = Number.isFinite(obj.jaw) ? obj.jaw : 0;
        for (const pivot of jaws) pivot.rotation.x = (pivot.userData.side * jaw) / 2;
      }
    }
    for (const [id, group] of this.objects) {
      if (!seen.has(id)) {
        this.scene.remove(group);
        this.objects.delete(id);
      }
    }
  }

  /** A marker annotation (kept until cleared). */
  addAnnotation(position, text, by) {
    const mesh = this._marker(0xf0c040, 0.0018);
    mesh.position.set(position[0], position[1], position[2]);
    this.scene.add(mesh);
    this.annotations.push({ mesh, text: text || '•', by });
  }

  clearAnnotations() {
    for (const a of this.annotations) this.scene.remove(a.mesh);
    this.annotations = [];
  }

  /** The point of the tissue under a click (client coordinates), or null. */
  pick(clientX, clientY) {
    const rect = this.renderer.domElement.getBoundingClientRect();
    const ndc = new THREE.Vector2(((clientX - rect.left) / rect.width) * 2 - 1, -((clientY - rect.top) / rect.height) * 2 + 1);
    this.raycaster.setFromCamera(ndc, this.camera);
    const hits = this.raycaster.intersectObject(this.tissue, false);
    return hits.length ? hits[0].point.toArray() : null;
  }

  /** A participant's page: the left button drives the instrument (desktop_input.js), the right one orbits
   *  the view (the participant's head), the wheel and middle button move it nearer or farther. */
  setDriveMode(on) {
    this.controls.mouseButtons = on
      ? { LEFT: null, MIDDLE: MOUSE.DOLLY, RIGHT: MOUSE.ROTATE }
      : { LEFT: MOUSE.ROTATE, MIDDLE: MOUSE.DOLLY, RIGHT: MOUSE.PAN };
  }

  /** Look through a head object's eyes (rigid id), or null for the orbit camera. */
  viewFrom(id) {
    this.eyes = id === null || id === '' ? null : Number(id);
    this.controls.enabled = this.eyes === null;
  }

  _label(key, text, world, cls) {
    let el = this.labels.get(key);
    if (!el) {
      el = document.createElement('div');
      el.className = `label ${cls || ''}`;
      this.labelLayer.appendChild(el);
      this.labels.set(key, el);
    }
    if (el.textContent !== text) el.textContent = text;
    const v = world.clone().project(this.camera);
    const visible = v.z < 1 && Math.abs(v.x) <= 1.05 && Math.abs(v.y) <= 1.05;
    el.style.display = visible ? '' : 'none';
    if (visible) {
      el.style.left = `${((v.x + 1) / 2) * this.container.clientWidth}px`;
      el.style.top = `${((1 - v.y) / 2) * this.container.clientHeight}px`;
    }
    return key;
  }

  _labels() {
    const used = new Set();
    for (const [id, group] of this.objects) {
      const owner = this.owners.get(id);
      if (!owner) continue;
      const text = `${owner.name} (${owner.role.replace(/_/g, ' ')}${owner.part ? `, ${owner.part}` : ''})`;
      used.add(this._label(`o${id}`, text, group.position, ''));
    }
    this.annotations.forEach((a, i) => used.add(this._label(`a${i}`, a.text, a.mesh.position, 'annotation')));
    for (const [key, el] of this.labels) {
      if (!used.has(key)) {
        el.remove();
        this.labels.delete(key);
      }
    }
  }

  render() {
    if (this.eyes !== null) {
      const head = this.objects.get(this.eyes);
      if (head) {
        this.camera.position.copy(head.position);
        this.camera.quaternion.copy(head.quaternion);
        this.camera.rotateY(Math.PI); // a headset looks along +z; a three.js camera along -z
      }
    } else {
      this.controls.update();
    }
    if (this.eyes !== null) {
      const head = this.objects.get(this.eyes);
      if (head) head.visible = false;
    }
    this.renderer.render(this.scene, this.camera);
    for (const group of this.objects.values()) group.visible = true;
    this._labels();
    this.frames += 1;
  }

  /** Counts of drawn pixels: a coarse grid of the canvas read back (how tests tell a drawn scene). */
  pixelSummary(step = 4) {
    const canvas = this.renderer.domElement;
    const w = canvas.width;
    const h = canvas.height;
    const scratch = document.createElement('canvas');
    scratch.width = Math.ceil(w / step);
    scratch.height = Math.ceil(h / step);
    const ctx = scratch.getContext('2d');
    ctx.drawImage(canvas, 0, 0, scratch.width, scratch.height);
    const data = ctx.getImageData(0, 0, scratch.width, scratch.height).data;
    let tissue = 0;
    let nonBackground = 0;
    const gray = new Array(scratch.width * scratch.height);
    for (let i = 0, p = 0; i < data.length; i += 4, p += 1) {
      const r = data[i];
      const g = data[i + 1];
      const b = data[i + 2];
      gray[p] = (r + g + b) / 3;
      if (Math.abs(r - 0x14) + Math.abs(g - 0x18) + Math.abs(b - 0x1d) > 24) nonBackground += 1;
      if (r > g + 30 && r > b + 20) tissue += 1; // the tissue's reddish colour, lit or shaded
    }
    return { width: scratch.width, height: scratch.height, tissue, nonBackground, gray };
  }
}
