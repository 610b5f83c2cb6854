"""A recorded state-sync session: the real snapshot codec on a generated grasp-pull-cut-burn scene, per client.

``record_trace`` drives ``netcode.sync.snapshot_codec.SnapshotServer`` frame by frame on a dome-shaped grid
surface (n x n vertices): a grasper closes, a motion predictor is added (the scene's response to the grasp
point, as the rehearsal server adds one at a grasp), the tissue is pulled up and released, a cut removes a slit
(a new topology epoch, with added cut-face triangles), a burn removes a disc (another epoch) and a reset brings
the whole surface back (a full topology in a new epoch); a second predictor joins the first; instruments, jaws,
heads and a hand move. Clients receive their messages over an emulated network: reliable messages
in order after a per-client delay (so snapshots of a new epoch, or naming a new predictor, arrive first and
are held), snapshots lost with probability ``loss`` and some delayed (reordered), acks returned after random
delays (out of order) and sometimes lost, a client joining late and one reconnecting. Every message a client
received is kept in order with what Python's ``SnapshotDecoder`` made of it and, at checkpoints, its state.

The browser decoder's conformance test replays these bytes in Chromium and compares (``tests/rehearsal/web``);
``rehearsal.web.decode_bench`` times it on a 10k-vertex scene.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from netcode.sync.patches import make_patches
from netcode.sync.snapshot import RigidKind, RigidSet, SnapshotError
from netcode.sync.snapshot_codec import SnapshotServer
from netcode.sync.snapshot_decode import EpochMismatchError, LateBaseError, MissingPredictorError, SnapshotDecoder
from netcode.sync.snapshot_messages import snapshot_message

HZ = 60.0
PULL = np.array([-0.004, 0.012, 0.003])  # m: how far the grasper pulls the tissue
# The predictor's response per unit of grasp motion: not the scene's own (the identity), so the predictor
# explains part of the pull and the patches carry the rest; with negative terms, so predicted offsets are
# negative too (the rounding of a negative P is part of the protocol).
RESPONSE = np.array([[0.9, -0.3, 0.05], [0.2, 1.0, -0.4], [-0.1, 0.3, 0.8]])


def smoothstep(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Plan:
    """When things happen (frames) and how the network treats each client."""

    frames: int = 150
    grasp: int = 12
    pull: tuple[int, int] = (15, 70)
    release: tuple[int, int] = (115, 140)
    cut: int = 80
    burn: int = 120
    late_join: int = 100
    reconnect: int = 132
    second_grasp: int = 60  # a second motion predictor (another response, another region)
    reset: int = 142  # the world is reset: a full topology in a new epoch, every vertex back
    checkpoint_every: int = 10


@dataclass
class ClientSpec:
    name: str
    budget: int | None
    reliable_delay: int  # frames before a reliable message arrives
    joins: int = 0  # frame of the first join


@dataclass
class ClientLog:
    """What one client received, in order, and what the Python decoder made of it."""

    name: str
    messages: list[bytes] = field(default_factory=list)
    outcomes: list[list] = field(default_factory=list)  # ["applied", [seq...]] | ["held"] | ["dropped"] | ["rejected"]
    acks: list[dict | None] = field(default_factory=list)  # ack_fields() after each message
    digests: list[str] = field(default_factory=list)  # state_digest(decoder_state()) after each message
    checkpoints: dict[int, dict] = field(default_factory=dict)  # message index -> decoder_state after it
    lost: int = 0
    reordered: int = 0


@dataclass
class Trace:
    clients: list[ClientLog]
    triangles: dict[int, np.ndarray]  # epoch -> the server's surface triangles in that epoch
    vertices: int
    frames: int
    decoders: dict[str, SnapshotDecoder]  # the Python decoders at the end (for further tests)
    prefixes: dict[str, list[int]] = field(default_factory=dict)


class Scene:
    """Ground truth per frame: an n x n dome of vertices, triangles, the grasp response, rigid objects."""

    def __init__(self, n: int = 24, size: float = 0.05, seed: int = 3) -> None:
        self.n, self.size, self.seed = n, size, seed
        u = np.linspace(0.0, size, n)
        x, z = np.meshgrid(u, u, indexing="ij")
        r2 = (x - size / 2) ** 2 + (z - size / 2) ** 2
        y = 0.2 * size * np.exp(-r2 / (0.2 * size**2)) + 0.0005 * np.sin(80 * x) * np.cos(60 * z)
        self.rest = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
        i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
        a = (i * n + j).ravel()
        self.triangles = np.concatenate([np.stack([a, a + 1, a + n], 1), np.stack([a + 1, a + n + 1, a + n], 1)])
        self.grasp_id = int((n // 2) * n + n // 2 + 1)
        self.grasp_point = self.rest[self.grasp_id]
        sigma = 0.2 * size
        self.weights = np.exp(-np.sum((self.rest - self.grasp_point) ** 2, axis=1) / (2 * sigma**2))
        self.spacing = size / (n - 1)
        self._current = self.triangles.copy()  # the surface triangles after the changes so far

    def vertex(self, i: int, j: int) -> int:
        return i * self.n + j

    def offset(self, frame: int, plan: Plan) -> np.ndarray:
        pull = smoothstep((frame - plan.pull[0]) / (plan.pull[1] - plan.pull[0]))
        back = smoothstep((frame - plan.release[0]) / (plan.release[1] - plan.release[0]))
        return PULL * (pull - 0.8 * back)

    def positions(self, frame: int, plan: Plan) -> np.ndarray:
        """All mesh vertices at ``frame``: the pull, a swelling that drifts (no predictor explains it) and
        deterministic solver jitter of +-0.03 mm."""
        pos = self.rest + self.weights[:, None] * self.offset(frame, plan)[None, :]
        t = frame / plan.frames
        centre = np.array([0.25 + 0.5 * t, 0.0, 0.7]) * self.size
        swell = np.exp(-np.sum((self.rest[:, [0, 2]] - centre[[0, 2]]) ** 2, axis=1) / (2 * (0.12 * self.size) ** 2))
        pos[:, 1] += 0.003 * math.sin(math.pi * t) * swell
        rng = np.random.default_rng((self.seed, frame))
        return pos + rng.uniform(-3e-5, 3e-5, pos.shape)

    def response(self, second: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(vertex ids, (K, 3, 3) metres per metre) of the surface's response to the grasp point's motion (or,
        ``second``, to a point in another region, with another response)."""
        weights = self.weights
        response = RESPONSE
        if second:
            point = self.rest[self.vertex(self.n // 4, self.n // 4)]
            weights = np.exp(-np.sum((self.rest - point) ** 2, axis=1) / (2 * (0.15 * self.size) ** 2))
            response = -RESPONSE.T
        keep = np.flatnonzero(weights >= 0.005)[:4096]
        return keep, weights[keep, None, None] * response[None]

    def cut(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(removed vertices, removed triangles, added triangles) of a slit along the middle row."""
        n = self.n
        row = n // 2 - 2
        lo, hi = n // 5, n - n // 5
        removed = np.array([self.vertex(i, row) for i in range(lo, hi)], np.int64)
        added = np.array(
            [[self.vertex(i, row - 1), self.vertex(i + 1, row - 1), self.vertex(i, row + 1)] for i in range(lo, hi, 2)],
            np.int64,
        )
        return removed, *self._triangle_change(removed, added)

    def burn(self, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(removed vertices, removed triangles, no added triangles) of a burnt disc near a corner."""
        centre = self.rest[self.vertex(self.n // 4, 3 * self.n // 4)]
        d = np.linalg.norm(self.rest[alive][:, [0, 2]] - centre[[0, 2]], axis=1)
        removed = alive[d <= 2.2 * self.spacing]
        return removed, *self._triangle_change(removed, np.zeros((0, 3), np.int64))

    def _triangle_change(self, removed: np.ndarray, added: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit = np.isin(self._current, removed).any(axis=1)
        removed_triangles = self._current[hit]
        self._current = np.concatenate([self._current[~hit], added])
        return removed_triangles, added

    def surface_triangles(self) -> np.ndarray:
        return self._current

    def reset(self) -> None:
        """The world as it was: every vertex and triangle back."""
        self._current = self.triangles.copy()

    def rigid(self, frame: int, plan: Plan, heads: int) -> RigidSet:
        """Instruments (ids from 32768, as the rehearsal server's), a jaw, heads, a hand; one appears late."""
        t = frame / HZ
        grasper = self.grasp_point + self.offset(frame, plan) + np.array([0.0, 0.002, 0.0])
        scissors = np.array([0.3 * self.size + 0.01 * math.cos(1.3 * t), 0.03, 0.6 * self.size + 0.01 * math.sin(t)])
        probe = np.array([0.8 * self.size, 0.04 + 0.004 * math.sin(0.7 * t), 0.2 * self.size])
        ids, kinds, pos, ang, axes, jaws = [], [], [], [], [], []

        def add(oid: int, kind: RigidKind, p: np.ndarray, angle: float, axis, jaw: float) -> None:
            ids.append(oid)
            kinds.append(int(kind))
            pos.append(p)
            ang.append(angle)
            axes.append(np.asarray(axis, float) / np.linalg.norm(axis))
            jaws.append(jaw)

        closing = 0.6 - 0.55 * smoothstep((frame - plan.grasp + 6) / 6.0) + 0.5 * smoothstep((frame - 110) / 8.0)
        add(32768, RigidKind.INSTRUMENT, grasper, 0.2 * math.sin(t), (0, 1, 0), closing)
        add(32769, RigidKind.INSTRUMENT, scissors, 1.4 * t, (0.6, 0.8, 0), 0.3 + 0.25 * math.sin(3 * t))
        if frame >= 50:
            add(32775, RigidKind.INSTRUMENT, probe, -0.5 * t, (1, 0, 0.2), math.nan)
        add(32800, RigidKind.JAW, scissors + 0.01, 0.9 * t, (0, 0, 1), 0.25 + 0.2 * math.sin(2 * t))
        for h in range(heads):
            head = np.array([0.05 + 0.3 * math.cos(h), 0.45 + 0.01 * math.sin(2 * t + h), 0.3 * math.sin(h)])
            add(h, RigidKind.HEAD, head, 0.1 * math.sin(t + h), (0, 1, 0), math.nan)
        add(40, RigidKind.HAND, grasper + np.array([0.0, 0.05, 0.02]), 2.0 * t, (1, 1, 0), math.nan)
        add(41, RigidKind.OTHER, np.array([-0.02, 0.01, 0.0]), 3.0, (0, 0, 1), math.nan)
        angles = np.array(ang)
        quats = np.concatenate([np.array(axes) * np.sin(angles / 2)[:, None], np.cos(angles / 2)[:, None]], axis=1)
        return RigidSet(np.array(ids), np.array(kinds), np.array(pos), quats, np.array(jaws))


# ------------------------------------------------------------------------------------------ the Python side


def decoder_state(decoder: SnapshotDecoder) -> dict:
    """Everything a viewer reads from a decoder, as JSON (arrays as base64 little-endian)."""
    positions, received = decoder.surface()
    layout = decoder.layout
    rigid = {}
    for oid, obj in sorted(decoder.rigid().items()):
        values = np.concatenate([obj.positions, obj.orientation, [math.nan if obj.jaw is None else obj.jaw]])
        rigid[str(oid)] = {"kind": obj.kind, "sequence": obj.sequence, "values": b64(values.astype("<f8").tobytes())}
    return {
        "epoch": decoder.epoch,
        "ids": b64(np.zeros(0, "<i4").tobytes() if layout is None else layout.vertex_ids.astype("<i4").tobytes()),
        "positions32": b64(positions.astype("<f4").tobytes()),
        "positions64": b64(positions.astype("<f8").tobytes()),
        "received": b64(received.astype(np.uint8).tobytes()),
        "grid": b64(decoder.surface_grid().astype("<i4").tobytes()),
        "rigid": rigid,
        "ack": decoder.ack_fields() if decoder.newest_sequence is not None else None,
        "newest": decoder.newest_sequence,
        "predictors": decoder.predictors,
        "missing_baselines": decoder.missing_baselines,
        "rejected": decoder.rejected,
        "held": len(decoder._held),
    }


def state_digest(state: dict) -> str:
    """SHA-256 of a decoder_state's content in a fixed order (the JS harness computes the same string)."""
    rigid = ";".join(f"{oid},{o['kind']},{o['sequence']},{o['values']}" for oid, o in sorted(state["rigid"].items()))
    ack = state["ack"]
    parts = [
        state["epoch"],
        state["newest"],
        state["held"],
        None if ack is None else f"{ack['newest']},{ack['bits']}",
        ",".join(map(str, state["predictors"])),
        state["missing_baselines"],
        state["rejected"],
        state["ids"],
        state["positions64"],
        state["positions32"],
        state["grid"],
        state["received"],
        rigid,
    ]
    text = "|".join("null" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def feed(decoder: SnapshotDecoder, data: bytes) -> list:
    """One message into the Python decoder; its outcome in the vocabulary the JS harness uses."""
    try:
        return ["applied", [s.sequence for s in decoder.on_message(data)]]
    except EpochMismatchError as exc:
        return ["held" if exc.held else "dropped"]
    except MissingPredictorError:
        return ["held"]
    except LateBaseError:  # a late snapshot a later one needed as a base: dropped, as JS's
        return ["dropped"]
    except SnapshotError:
        return ["rejected"]


# ------------------------------------------------------------------------------------------ the session


def record_trace(
    n: int = 24,
    plan: Plan | None = None,
    loss: float = 0.02,
    reorder: float = 0.05,
    seed: int = 11,
    patch_size: int = 40,
    clients: list[ClientSpec] | None = None,
    checkpoints: bool = True,
    size: float = 0.05,
) -> Trace:
    """Run the session and return what every client received (see the module docstring): an n x n grid
    ``size`` metres wide in patches of ``patch_size``; snapshots lost with probability ``loss``, delayed
    by a frame or two with probability ``reorder``; ``checkpoints`` False skips the Python decoder's state
    digests and checkpoints (a benchmark only needs the bytes)."""
    plan = plan or Plan()
    specs = clients or [
        ClientSpec("A", budget=700, reliable_delay=3),
        ClientSpec("B", budget=None, reliable_delay=0),
        ClientSpec("C", budget=900, reliable_delay=2, joins=plan.late_join),
    ]
    rng = np.random.default_rng(seed)
    scene = Scene(n, size)
    alive = np.arange(n * n)
    layout = make_patches(alive, scene.rest, patch_size)
    server = SnapshotServer(layout, triangles=scene.triangles, layout_edits=True)
    triangles = {server.epoch: scene.triangles.copy()}
    logs = {s.name: ClientLog(s.name) for s in specs}
    decoders: dict[str, SnapshotDecoder] = {}
    pending: dict[str, list[tuple[int, int, bytes]]] = {s.name: [] for s in specs}  # (due, order, message)
    acks: list[tuple[int, str, int, int]] = []  # (due, client, newest, bits)
    order = 0

    def send(name: str, message: bytes, due: int) -> None:
        nonlocal order
        pending[name].append((due, order, message))
        order += 1

    def join(spec: ClientSpec, f: int) -> None:
        server.remove_client(spec.name)
        server.add_client(spec.name, budget_bytes=spec.budget, resend_after=8)
        decoders.setdefault(spec.name, SnapshotDecoder())
        for message in server.join_messages():
            send(spec.name, message, f + spec.reliable_delay)

    def reliable_to_all(message: bytes, f: int) -> None:
        for spec in specs:
            if spec.name in server.clients:
                send(spec.name, message, f + spec.reliable_delay)

    for f in range(plan.frames):
        for spec in specs:
            if f == spec.joins:
                join(spec, f)
        if f == plan.reconnect:
            join(specs[0], f)
        if f == plan.grasp:
            reliable_to_all(server.add_predictor(*scene.response()), f)
        if f == plan.second_grasp:
            reliable_to_all(server.add_predictor(*scene.response(second=True)), f)
        positions = scene.positions(f, plan)
        if f == plan.reset:
            scene.reset()
            alive = np.arange(n * n)
            layout = make_patches(alive, positions, patch_size)
            all_triangles = scene.surface_triangles()
            message = server.change_topology(
                layout, cause="full", added_triangles=all_triangles, triangles=all_triangles
            )
            triangles[server.epoch] = all_triangles.copy()
            reliable_to_all(message, f)
        if f in (plan.cut, plan.burn):
            removed, removed_tris, added_tris = scene.cut() if f == plan.cut else scene.burn(alive)
            alive = np.setdiff1d(alive, removed)
            # the cut goes as a layout edit (kept patches), the burn with a layout made afresh
            relayout = server.edit_layout if f == plan.cut else make_patches
            layout = relayout(alive, positions[alive], patch_size)
            message = server.change_topology(
                layout,
                cause="cut" if f == plan.cut else "burn",
                instrument=32769,
                removed_vertices=removed,
                removed_triangles=removed_tris,
                added_triangles=added_tris,
                triangles=scene.surface_triangles(),
            )
            triangles[server.epoch] = scene.surface_triangles().copy()
            reliable_to_all(message, f)
        server.begin_frame(f / HZ, positions[layout.vertex_ids], scene.rigid(f, plan, heads=len(specs)))
        for spec in specs:
            if spec.name not in server.clients:
                continue
            server.set_focus(spec.name, np.array([scene.grasp_point, positions[scene.vertex(n // 3, n // 3)]]))
            message = snapshot_message(server.encode(spec.name))
            if rng.random() < loss:
                logs[spec.name].lost += 1
                continue
            delay = 0
            if rng.random() < reorder:
                delay = int(rng.integers(1, 3))
                logs[spec.name].reordered += 1
            send(spec.name, message, f + delay)
        for spec in specs:
            name = spec.name
            due = sorted(m for m in pending[name] if m[0] <= f)
            pending[name] = [m for m in pending[name] if m[0] > f]
            decoder = decoders.get(name)
            log = logs[name]
            for _, _, message in due:
                missing = decoder.missing_baselines
                outcome = feed(decoder, message)
                log.messages.append(message)
                log.outcomes.append(outcome)
                ack = decoder.ack_fields() if decoder.newest_sequence is not None else None
                log.acks.append(ack)
                if checkpoints:
                    log.digests.append(state_digest(decoder_state(decoder)))
                if outcome[0] == "applied" and outcome[1] and ack is not None and rng.random() >= loss:
                    acks.append((f + int(rng.integers(2, 9)), name, ack["newest"], ack["bits"]))
                if decoder.missing_baselines > missing and name in server.clients:
                    server.reset_client(name)  # what the server does on the client's snap_resync
            if checkpoints and decoder is not None and log.messages and f % plan.checkpoint_every == 0:
                log.checkpoints[len(log.messages) - 1] = decoder_state(decoder)
        for item in [a for a in acks if a[0] <= f]:
            if item[1] in server.clients:
                server.on_ack_fields(item[1], item[2], item[3])
        acks = [a for a in acks if a[0] > f]
    for name, log in logs.items():
        if checkpoints and log.messages:
            log.checkpoints[len(log.messages) - 1] = decoder_state(decoders[name])
    return Trace(list(logs.values()), triangles, n * n, plan.frames, decoders)


def trace_json(trace: Trace) -> dict:
    """The trace as JSON for a page: per client its messages (base64) and the checkpoint indices."""
    return {
        "clients": [
            {"name": c.name, "messages": [b64(m) for m in c.messages], "checkpoints": sorted(c.checkpoints)}
            for c in trace.clients
        ]
    }
