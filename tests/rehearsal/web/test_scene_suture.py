"""The 3D view draws the suture (rehearsal/web/static/js/scene.js), in real Chromium: the needle as a curved tube
of the shape ``snap_suture`` gives, at its rigid pose, and the thread as a line through its decoded points."""

from __future__ import annotations

import math

SCENE_HTML = """<!doctype html><html><head><meta charset="utf-8">
<script type="importmap">
  {"imports": {"three": "/static/vendor/three/three.module.js", "three/addons/": "/static/vendor/three/addons/"}}
</script></head><body><div id="view" style="width: 480px; height: 320px"></div><div id="labels"></div></body></html>"""

DRAW_JS = """async (arg) => {
  const { RoomScene } = await import('/static/js/scene.js');
  const { needlePoints } = await import('/static/js/thread_decoder.js');
  const scene = new RoomScene(document.getElementById('view'), document.getElementById('labels'));
  scene.camera.position.set(0.0, 0.08, 0.12);
  scene.camera.lookAt(0, 0.03, 0);
  const count = () => {
    scene.render();
    const c = scene.renderer.domElement;
    const ctx = Object.assign(document.createElement('canvas'), { width: c.width, height: c.height }).getContext('2d');
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let violet = 0, steel = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 2] > d[i + 1] + 40 && d[i] > d[i + 1] + 20) violet += 1;
      if (d[i] > 150 && Math.abs(d[i] - d[i + 2]) < 25 && Math.abs(d[i] - d[i + 1]) < 25) steel += 1;
    }
    return { violet, steel };
  };
  const before = count();
  const suture = { needle: 32767, radius: arg.radius, arc: arg.arc, wireRadius: 0.0008, threadRadius: 0.00015 };
  scene.setSuture(suture);
  const rotation = [0, 0, Math.sin(arg.turn / 2), Math.cos(arg.turn / 2)];
  scene.setRigid(new Map([[32767, { kind: 'needle', position: [0, 0.03, 0], rotation, jaw: null }]]));
  scene.setThread(Float64Array.from(arg.thread));
  const after = count();
  const group = scene.objects.get(32767);
  const tube = group.children[0].geometry;
  tube.computeBoundingSphere();
  const arc = needlePoints(suture, [0, 0.03, 0], rotation, 5);
  return { before, after, drawn: scene.threadGeometry.drawRange.count, points: scene.threadPoints,
           tube: tube.type, radius: tube.parameters.radius, arc: Array.from(arc) };
}"""


def test_the_scene_draws_the_needle_as_a_tube_and_the_thread_as_a_line(page, static_server):
    page.goto(static_server + "/")
    page.set_content(SCENE_HTML)
    thread = []
    for i in range(120):
        t = i / 119
        thread += [-0.04 + 0.08 * t, 0.03 + 0.01 * math.sin(6 * t), 0.005 * math.cos(9 * t)]
    got = page.evaluate(DRAW_JS, {"radius": 0.012, "arc": 3 * math.pi / 4, "turn": 0.5, "thread": thread})
    assert got["drawn"] == 120 and got["points"] == 120
    assert got["tube"] == "TubeGeometry" and got["radius"] == 0.0008
    assert got["after"]["violet"] > got["before"]["violet"] + 50, got  # the thread's line shows
    assert got["after"]["steel"] > got["before"]["steel"] + 30, got  # and the needle's tube
    tail = got["arc"][:3]  # the arc starts at radius along the needle frame's x, turned by 0.5 rad about z
    assert abs(tail[0] - 0.012 * math.cos(0.5)) < 1e-9 and abs(tail[1] - (0.03 + 0.012 * math.sin(0.5))) < 1e-9
    assert not page.js_errors, page.js_errors


PIECES_JS = """async (arg) => {
  const { RoomScene } = await import('/static/js/scene.js');
  const scene = new RoomScene(document.getElementById('view'), document.getElementById('labels'));
  const line = (x0) => Float64Array.from([x0, 0.03, 0, x0 + 0.01, 0.031, 0, x0 + 0.02, 0.03, 0]);
  scene.setThreads(new Map([[0, line(-0.03)], [1, line(0.0)], [4, line(0.02)]]));
  const drawn = () => Object.fromEntries([...scene.pieces].map(([id, l]) => [id, l.geometry.drawRange.count]));
  const first = { live: scene.threadGeometry.drawRange.count, pieces: drawn(), count: scene.threadCount };
  scene.setThreads(new Map([[0, line(-0.03)], [4, line(0.02)]]));  // piece 1 gone
  return { first, second: drawn(), lines: scene.pieces.size };
}"""


def test_the_scene_draws_every_thread_the_live_one_and_the_tied_pieces(page, static_server):
    page.goto(static_server + "/")
    page.set_content(SCENE_HTML)
    got = page.evaluate(PIECES_JS)
    assert got["first"] == {"live": 3, "pieces": {"1": 3, "4": 3}, "count": 3}
    assert got["second"] == {"1": 0, "4": 3} and got["lines"] == 2  # a piece gone is hidden, its line kept
    assert not page.js_errors, page.js_errors
