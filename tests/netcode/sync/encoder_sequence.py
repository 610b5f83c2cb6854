"""A recorded encoder sequence: a deterministic session through ``SnapshotServer`` whose snapshot bytes are pinned.

The bytes the encoder wrote for this sequence before its kernels moved to ``encode_kernels`` are stored in
``encoder_golden.json`` (one CRC-32 and length per snapshot, and a SHA-256 of all of them in order):
any encoder must write exactly these bytes (the JS decoder and the C-interoperable transport read them).

The session: a moving surface with solver jitter, rigid objects (an instrument with a jaw, one without, a head;
a second head comes and goes, an instrument's jaw opens and closes), five clients with different budgets,
ack delays and losses (acks one by one and as ``snap_ack`` fields, some out of order), a late joiner, a
resync, focus points, a motion predictor, a cut (carried baselines), an edited layout (kept patches), a
reset (cause ``full``), acks of an earlier epoch arriving late.

The sequence runs with one fixed error bound (``moving_error=None``): the bytes were recorded before the
bound followed motion (``motion_bound.py``, an encoder choice, not a format change: any encoder may choose
other grid values within its bound), and they pin the kernels' writing of what was chosen.

The bytes were recorded again, deliberately, for snapshot version 4 (optimistic patch deltas with a fallback,
SNAPSHOT.md 2.2): the server's default ``anchor_every`` codes deltas against versions not yet acknowledged,
and every delta entry names its fallback. The session gives every client optimistic deltas
(``optimism="all"``), the encoder of those bytes; the default gives them only to a client whose budget binds,
an encoder choice, not a format change (``SnapshotServer.optimism``).

``python -m tests.netcode.sync.encoder_sequence --write`` records the golden file again (only ever from an
encoder known to be right).
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from netcode.sync.patches import make_patches
from netcode.sync.snapshot import RigidKind, RigidSet
from netcode.sync.snapshot_codec import OPTIMISM_ALL, SnapshotServer
from tests.netcode.sync.snapshot_helpers import Scene

GOLDEN = Path(__file__).with_name("encoder_golden.json")
FRAMES = 72
# client id -> (budget bytes or None, ack delay in frames, loss probability, resend_after, joins at frame)
CLIENTS = {
    "lead": (None, 1, 0.0, 8, 0),
    "slow": (700, 3, 0.2, 4, 0),
    "tiny": (56, 2, 0.1, 8, 0),
    "lossy": (2500, 5, 0.35, 6, 0),
    "late": (1200, 2, 0.05, 8, 9),
}


def _rigid(scene: Scene, f: int) -> RigidSet:
    """The scene's three objects, the jaw opening and closing, a second head from frame 12 to 40, and a third
    object (without jaw) that is gone from frame 50 on."""
    base = scene.rigid(f)
    ids, kinds = list(base.ids), list(base.kinds)
    pos, rot, jaws = list(base.positions), list(base.orientations), list(base.jaws)
    jaws[0] = 0.5 + 0.45 * np.sin(f / 5.0)
    if 12 <= f < 40:
        ids.append(49153)
        kinds.append(RigidKind.HEAD)
        pos.append(np.array([0.02 + 0.0003 * f, 0.4, -0.25]))
        a = 0.02 * f
        rot.append(np.array([0.0, np.sin(a / 2), 0.0, np.cos(a / 2)]))
        jaws.append(np.nan)
    if f >= 50:
        keep = [i for i, oid in enumerate(ids) if oid != 1]
        ids, kinds = [ids[i] for i in keep], [kinds[i] for i in keep]
        pos, rot, jaws = [pos[i] for i in keep], [rot[i] for i in keep], [jaws[i] for i in keep]
    return RigidSet(np.array(ids), np.array(kinds), np.array(pos), np.array(rot), np.array(jaws))


def snapshots(batch: bool = False) -> Iterator[tuple[int, str, bytes]]:
    """(frame, client, snapshot bytes) of the recorded session, in the order they were encoded (``batch``: each
    frame's clients in one ``encode_many`` call, not one ``encode`` each)."""
    rng = np.random.default_rng(20)
    scene = Scene(seed=20)
    server = SnapshotServer(scene.layout, moving_error=None, optimism=OPTIMISM_ALL)  # one fixed bound, all optimistic
    alive = scene.layout.vertex_ids
    acks: list[tuple[int, str, int]] = []  # (due frame, client, sequence)
    for f in range(FRAMES):
        for cid, (budget, _, _, resend, join) in CLIENTS.items():
            if f == join:
                server.add_client(cid, budget_bytes=budget, resend_after=resend)
        if f == 18:  # a cut: a new layout, baselines carried
            drop = alive[alive % 9 == 4]
            alive = np.setdiff1d(alive, drop)
            server.change_topology(make_patches(alive, scene.rest[alive], 36), removed_vertices=drop, instrument=1)
        if f == 34:  # a small cut as an edit of the layout: untouched patches keep their baselines
            drop = alive[(alive > 200) & (alive < 215)]
            alive = np.setdiff1d(alive, drop)
            server.change_topology(server.edit_layout(alive, scene.rest[alive]), removed_vertices=drop)
        if f == 58:  # a reset: full records again
            server.change_topology(server.layout, cause="full")
        if f == 26:
            server.reset_client("slow")  # resync
        pos = scene.surface(f, move=f < 64)
        by_id = dict(zip(scene.layout.vertex_ids.tolist(), pos, strict=True))
        surface = np.array([by_id[v] for v in server.layout.vertex_ids.tolist()])
        server.begin_frame(f / 60, surface, _rigid(scene, f))
        if f == 22:  # a grasp: a motion predictor of the vertices near the bump, from the next frame on
            near = np.argsort(np.linalg.norm(scene.rest - scene.centre, axis=1))[:40]
            ids = np.sort(near)
            ids = ids[np.isin(ids, server.layout.vertex_ids)]
            matrices = np.repeat(np.eye(3)[None] * 0.8, len(ids), axis=0)
            server.add_predictor(ids, matrices)
        for cid in server.clients:
            if cid in ("lead", "lossy") and f % 3:
                tip = scene.centre + np.array([0.001 * (f % 5), 0.01, 0.0])
                server.set_focus(cid, np.array([tip, [0.0, 0.02, 0.04]]))
            if not batch:
                yield f, cid, server.encode(cid)
        if batch:
            encoded = server.encode_many(list(server.clients))
            yield from ((f, cid, data) for cid, data in zip(server.clients, encoded, strict=True))
        for cid in server.clients:
            _, delay, loss, _, _ = CLIENTS[cid]
            if rng.random() >= loss:
                acks.append((f + delay + int(rng.integers(0, 2)), cid, server.sequence))
        due = [a for a in acks if a[0] <= f]
        acks = [a for a in acks if a[0] > f]
        rng.shuffle(due)  # out of order
        for _, cid, seq in due:
            if cid == "lossy" and seq % 2:  # as the fields of a snap_ack (newest + bits of the previous 32)
                server.on_ack_fields(cid, seq, 0b101)
            else:
                server.on_ack(cid, seq)


def record() -> dict:
    """The golden record of ``snapshots()``: per snapshot (frame, client, length, CRC-32), and a SHA-256 of all."""
    digest = hashlib.sha256()
    rows = []
    for f, cid, data in snapshots():
        digest.update(f"{f}:{cid}:{len(data)}:".encode())
        digest.update(data)
        rows.append([f, cid, len(data), zlib.crc32(data)])
    return {"sha256": digest.hexdigest(), "snapshots": rows}


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        GOLDEN.write_text(json.dumps(record(), separators=(",", ":")) + "\n")
        print(f"wrote {GOLDEN}", file=sys.stderr)
    else:
        print(json.dumps(record()["sha256"]))
