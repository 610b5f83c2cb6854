"""State-sync benchmark: traces recorded from the physics engine, and a generated one, through the snapshot codec.

    python -m netcode.sync.snapshot_bench --trace liver.npz --trace block.npz [--no-generated] [--frames 300]
        [--clients 4] [--rate 1000000] [--rate-vertices 10000] [--rtt-ms 100] [--loss 0.02]
        [--moving-error 5e-4] [--burst-frames 1] [--anchor-every 3] [--optimistic-motion 3e-3]
        [--optimism bound] [--bound-window 30]

``make bench-snapshot`` records the traces with ``physics.trace_recorder`` when missing (netcode never
imports physics: the bench reads the files, ``recorded_trace.py``) and prints one JSON document: a
``summary`` (each figure per trace, side by side) and per trace its runs (``budgeted`` at ``--rate``,
``budgeted_per_vertex`` at the same budget per vertex as ``--rate`` for ``--rate-vertices``,
``unlimited``), Draco and the goals of issue 22. Moving patches are sent within ``--moving-error`` (0.5 mm;
``motion_bound.py``; 0: within ``--max-error`` always, as before) and settled ones within ``--max-error``; Draco
is compressed at the error the codec may show in each sampled frame (``--moving-error`` where the tissue moves,
``--max-error`` at rest: ``ratio_to_draco_unlimited``) and at ``--max-error`` throughout
(``ratio_to_draco_at_max_error_unlimited``). Budgeted clients may save ``--burst-frames`` of budget for a
later snapshot (budget credit, ``SnapshotServer.add_client``); ``bytes_over_budget_max_over_any_frames`` is
the most their snapshots exceeded k budgets over any k consecutive frames. Patch deltas go against the version
last sent between anchors against acked versions at most ``--anchor-every`` frames apart (1: acked baselines
only), for patches that moved at most ``--optimistic-motion`` in the frame, to clients whose budget binds (one
of their last ``--bound-window`` snapshots left a wanted patch out or spent saved credit; ``--optimism all``: every
client; SNAPSHOT.md 2.2); a client that lost
such a base shows the patch approximately (``approximate_patch_fraction`` of patch-frames,
``frames_with_an_approximate_patch_fraction`` of client-frames, ``approximate_frames_per_episode_mean``).
Byte figures count the topology
and predictor messages (``bits_per_vertex_per_frame``), also per phase of the script; errors are what a
client shows once it holds every patch within 1 mm, and at rest; a late joiner arrives ``--late-join-s`` in.

The generated trace (numpy only, no physics; a unit fixture more than the figure of merit): a 100 x 100
vertex organ-like surface (10 cm square dome, 19,602 triangles) with uniform per-frame solver jitter of
+-0.04 mm per coordinate, a Gaussian bump (sigma 12 mm) that follows a grasper pulling 3 cm up and 1 cm
sideways over 2 s, a cut at frame 180 (a 6 cm slit: vertices and triangles removed, a new topology
epoch), then the release; three instruments move (one with a jaw) and every client's head bobs.

When the jaws have closed (frame ``GRASP_FRAME``; generated trace only) the server adds a motion
predictor, as the rehearsal server does at a grasp: the trace's response to a small motion of the grasp
point along x, y and z (what ``rehearsal.response_model.probe_response`` measures with the physics
engine; keeping vertices that move at least MIN_RESPONSE of it). Its ``snap_predictor`` message reaches
each client with that frame's snapshot and its bytes are counted. The trace's bump is exactly linear in
the grasp motion, so here the predictor explains all of it. ``--no-predictor`` runs without it.

Each client (``--clients`` join at frame 0) receives its snapshots at once (the codec's figures do not
depend on one-way latency), loses ``--loss`` of them, acknowledges the rest ``--rtt-ms`` later, and gets
each topology message half a round trip after the change (its snapshots of the new epoch are held until
then). Figures: snapshot bytes per frame, bits per vertex per frame, Mbit/s at 60 Hz, encode/decode
microseconds per client-frame (wall clock mean, median and p99, and the encoding thread's CPU time, which
other busy processes disturb less; the numba kernels are warmed up first), the client's error against the
server's truth (quantization of what it received; and everything it displays, i.e. plus staleness), and
where DracoPy is installed (``make bench-snapshot`` installs it) Draco's bytes for the same frames at the
same maximum error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from netcode.sync.motion_bound import DEFAULT_MOVING_ERROR
from netcode.sync.patches import DEFAULT_PATCH_SIZE, make_patches
from netcode.sync.quantize import PositionQuantizer
from netcode.sync.recorded_trace import Epoch, RecordedTrace, TraceError
from netcode.sync.snapshot import CodecConfig, RigidKind, RigidSet, SnapshotError
from netcode.sync.snapshot_codec import (
    DEFAULT_ANCHOR_EVERY,
    DEFAULT_BOUND_WINDOW,
    DEFAULT_OPTIMISTIC_MOTION,
    OPTIMISM_ALL,
    OPTIMISM_BOUND,
    SnapshotServer,
    budget_for_rate,
)
from netcode.sync.snapshot_decode import LateBaseError, SnapshotDecoder
from netcode.sync.snapshot_messages import snapshot_message

HZ = 60.0
GRID = 100
SIZE = 0.1
JITTER = 4e-5
SIGMA = 0.012
PULL = np.array([0.005, 0.03, 0.01])
CUT_FRAME = 180
GRASP_FRAME = 30
PROBE = 0.002  # m: the probe's motion of the grasp point
MIN_RESPONSE = 0.005  # as the rehearsal server's codec predictor (rehearsal.response_model.CODEC_MIN_RESPONSE)
MAX_PREDICTED = 4096
GENERATED_PHASES = {"join": (0, 10), "grasp": (10, 30), "pull": (30, 150), "hold": (150, 210), "release": (210, 300)}
JOINED_ERROR = 1e-3
"""A client has joined (converged) from the first frame it holds every patch within this of the truth."""
REST_FRAMES = 6
"""The tissue is at rest at a frame when no vertex moved more than the error bound over this many frames."""


# ------------------------------------------------------------------------------------------ the trace


def smoothstep(t: np.ndarray | float) -> np.ndarray | float:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def surface_rest() -> tuple[np.ndarray, np.ndarray]:
    """(positions (N, 3), triangles (T, 3)) of a dome-shaped grid; +y is up."""
    u = np.linspace(0.0, SIZE, GRID)
    x, z = np.meshgrid(u, u, indexing="ij")
    r2 = (x - SIZE / 2) ** 2 + (z - SIZE / 2) ** 2
    y = 0.02 * np.exp(-r2 / 0.002) + 0.002 * np.sin(40 * x) * np.cos(30 * z)
    pos = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    i, j = np.meshgrid(np.arange(GRID - 1), np.arange(GRID - 1), indexing="ij")
    a = (i * GRID + j).ravel()
    tris = np.concatenate([np.stack([a, a + 1, a + GRID], 1), np.stack([a + 1, a + GRID + 1, a + GRID], 1)])
    return pos, tris


def grasp_offset(frame: int) -> np.ndarray:
    """The grasper's displacement from its grasp point: pull over frames 30-150, release 210-300."""
    pull = smoothstep((frame - 30) / 120.0) - smoothstep((frame - 210) / 90.0)
    return PULL * pull


def cut_vertices(rest: np.ndarray) -> np.ndarray:
    """Vertex ids removed by the cut: a 6 cm slit one grid row wide."""
    x, z = rest[:, 0], rest[:, 2]
    return np.flatnonzero((np.abs(z - 0.0303) < 0.0005) & (x > 0.02) & (x < 0.08))


def rigid_at(frame: int, grasp_point: np.ndarray, clients: int) -> RigidSet:
    t = frame / HZ
    grasper = grasp_point + grasp_offset(frame) + np.array([0, 0.002, 0])
    scissors = np.array([0.03 + 0.02 * math.cos(1.5 * t), 0.04, 0.07 + 0.02 * math.sin(1.5 * t)])
    probe = np.array([0.08, 0.05 + 0.005 * math.sin(0.7 * t), 0.02 + 0.01 * t / 5])
    heads = [
        np.array([0.05 + 0.3 * math.cos(k), 0.45 + 0.01 * math.sin(2 * t + k), 0.3 * math.sin(k)])
        for k in range(clients)
    ]
    pos = np.array([grasper, scissors, probe, *heads])
    angles = np.array([0.2 * math.sin(t), 1.5 * t, 0.3 * t, *[0.1 * math.sin(t + k) for k in range(clients)]])
    axes = np.array([[0, 1, 0], [0.6, 0.8, 0], [1, 0, 0], *[[0, 1, 0]] * clients], float)
    quats = np.concatenate([axes * np.sin(angles / 2)[:, None], np.cos(angles / 2)[:, None]], axis=1)
    jaw_grasper = 0.6 - 0.5 * smoothstep((frame - 20) / 10.0) + 0.5 * smoothstep((frame - 210) / 10.0)
    jaws = np.array([jaw_grasper, 0.3 + 0.2 * math.sin(3 * t), np.nan, *[np.nan] * clients])
    kinds = np.array([RigidKind.INSTRUMENT] * 3 + [RigidKind.HEAD] * clients)
    return RigidSet(np.arange(len(pos)), kinds, pos, quats, jaws)


class Trace:
    """The generated trace's ground truth per frame: surface positions (all mesh vertices), rigid objects and
    its two topology epochs (the whole dome; after the cut)."""

    name = "generated"
    hz = HZ

    def __init__(self, frames: int, clients: int, seed: int = 7) -> None:
        self.rest, self.triangles = surface_rest()
        self.frames = frames
        self.clients = clients
        self.seed = seed
        self.vertex_ids = np.arange(len(self.rest))
        centre = np.array([SIZE / 2, 0, SIZE / 2 + 0.005])
        self.grasp_id = int(np.argmin(np.sum((self.rest[:, [0, 2]] - centre[[0, 2]]) ** 2, axis=1)))
        self.grasp_point = self.rest[self.grasp_id]
        self.weights = np.exp(-np.sum((self.rest - self.grasp_point) ** 2, axis=1) / (2 * SIGMA**2))
        self.removed = cut_vertices(self.rest)
        keep_tri = ~np.isin(self.triangles, self.removed).any(axis=1)
        self.removed_triangles = self.triangles[~keep_tri]
        self.triangles_after = self.triangles[keep_tri]
        none = np.zeros((0, 3), np.int64)
        self.epochs = [Epoch(0, "full", -1, self.triangles, none, self.triangles)]
        if frames > CUT_FRAME:
            self.epochs.append(Epoch(CUT_FRAME, "cut", 1, self.triangles_after, self.removed_triangles, none))
        self.grasp_frames = np.array([GRASP_FRAME])

    def rows(self, vertex_ids: np.ndarray) -> np.ndarray:
        return np.asarray(vertex_ids, np.int64)

    def positions(self, frame: int) -> np.ndarray:
        pos = self.rest + self.weights[:, None] * grasp_offset(frame)[None, :]
        rng = np.random.default_rng((self.seed, frame))
        return pos + rng.uniform(-JITTER, JITTER, pos.shape)

    def response(self) -> tuple[np.ndarray, np.ndarray]:
        """(vertex ids, (K, 3, 3) metres per metre) of the surface's response to the grasp point's motion,
        by finite differences of the noise-free deformation along x, y and z."""

        def deform(offset: np.ndarray) -> np.ndarray:
            return self.rest + self.weights[:, None] * offset[None, :]

        columns = np.stack([(deform(e * PROBE) - deform(np.zeros(3))) / PROBE for e in np.eye(3)], axis=2)
        strength = np.abs(columns).max(axis=(1, 2))
        keep = np.flatnonzero(strength >= MIN_RESPONSE)
        keep = keep[np.argsort(-strength[keep], kind="stable")[:MAX_PREDICTED]]
        return keep, columns[keep]

    def rigid(self, frame: int) -> RigidSet:
        return rigid_at(frame, self.grasp_point, self.clients)

    def focus(self, frame: int, client: int) -> np.ndarray:
        r = self.rigid(frame)
        return np.array([r.positions[client % 3], self.grasp_point])


# ------------------------------------------------------------------------------------------ the run


def run(
    trace: Trace | RecordedTrace,
    config: CodecConfig,
    budget: int | None,
    rtt_frames: int,
    loss: float,
    seed: int = 1,
    patch_size: int = DEFAULT_PATCH_SIZE,
    predictor: bool = True,
    late_join: int | None = None,
    moving_error: float | None = None,
    burst: int = 0,
    anchor_every: int = DEFAULT_ANCHOR_EVERY,
    optimistic_motion: float = DEFAULT_OPTIMISTIC_MOTION,
    optimism: str = OPTIMISM_BOUND,
    bound_window: int = DEFAULT_BOUND_WINDOW,
) -> dict:
    """Replay ``trace`` to ``trace.clients`` clients (joined at frame 0) and, if ``late_join`` is a frame,
    one more that joins then; returns the figures (the late joiner's apart)."""
    rng = np.random.default_rng(seed)
    hz = trace.hz
    positions = [trace.positions(f) for f in range(trace.frames)]
    epochs = {e.frame: e for e in trace.epochs[1:]}
    epoch = trace.epochs[0]
    alive = epoch.surface_ids
    layout = make_patches(alive, positions[0][trace.rows(alive)], patch_size)
    server = SnapshotServer(
        layout,
        config,
        triangles=epoch.triangles,
        layout_edits=True,
        moving_error=moving_error,
        anchor_every=anchor_every,
        optimistic_motion=optimistic_motion,
        optimism=optimism,
        bound_window=bound_window,
    )
    n_clients = trace.clients + (late_join is not None)
    decoders: list[SnapshotDecoder | None] = [None] * n_clients
    joined = np.full(n_clients, -1)
    reliable = np.zeros(n_clients)  # bytes of topology and predictor messages sent to each client
    reliable_at = np.zeros(trace.frames)  # ... to the clients joined at frame 0, per frame
    topo_bytes = np.zeros(n_clients)
    acks: list[list[tuple[int, int]]] = [[] for _ in range(n_clients)]  # (due frame, sequence)
    pending: list[tuple[int, int, bytes]] = []  # (due frame, client, reliable message)
    sizes: list[list[int]] = [[] for _ in range(n_clients)]
    enc_us, enc_cpu_us, dec_us, quant_err = [], [], [], []
    display: list[list[tuple[int, float, bool]]] = [[] for _ in range(n_clients)]  # (frame, max error, all?)
    held = lost = rejected = late_dropped = 0
    approx_counts: list[float] = []  # per main client-frame: fraction of patches shown approximately (SNAPSHOT 2.2)
    approx_before: list[set[int]] = [set() for _ in range(n_clients)]
    approx_patch_frames = 0
    approx_episodes = 0  # patches that became approximate (an optimistic base lost), over all main clients
    topo_messages = 0
    vertices_per_frame = []
    at_rest = _rest_frames(trace, positions, config.positions.max_error)

    def join(c: int, f: int) -> None:
        dec = decoders[c] = SnapshotDecoder()
        for msg in server.join_messages():
            dec.on_message(msg)
            reliable[c] += len(msg)
            reliable_at[f] += len(msg) if c < trace.clients else 0
        server.add_client(c, budget_bytes=budget, resend_after=rtt_frames + 2, burst_bytes=burst if budget else 0)
        joined[c] = f

    for f in range(trace.frames):
        for c in range(n_clients):
            if decoders[c] is None and ((c < trace.clients and f == 0) or (c == trace.clients and f == late_join)):
                join(c, f)
        if predictor and f == GRASP_FRAME and hasattr(trace, "response"):
            msg = server.add_predictor(*trace.response())
            for c, dec in enumerate(decoders):
                if dec is not None:
                    dec.on_message(msg)
                    reliable[c] += len(msg)
                    reliable_at[f] += len(msg) if c < trace.clients else 0
        if f in epochs:
            epoch = epochs[f]
            old_ids = layout.vertex_ids
            alive = epoch.surface_ids
            layout = server.edit_layout(alive, positions[f][trace.rows(alive)], patch_size)
            msg = server.change_topology(
                layout,
                cause=epoch.cause,
                instrument=None if epoch.instrument < 0 else epoch.instrument,
                removed_vertices=np.setdiff1d(old_ids, layout.vertex_ids),
                removed_triangles=epoch.removed,
                added_triangles=epoch.added,
                triangles=epoch.triangles,
            )
            topo_messages += 1
            for c, dec in enumerate(decoders):
                if dec is not None:
                    pending.append((f + max(1, rtt_frames // 2), c, msg))
                    reliable[c] += len(msg)
                    reliable_at[f] += len(msg) if c < trace.clients else 0
                    topo_bytes[c] += len(msg)
        truth = positions[f][trace.rows(layout.vertex_ids)]
        vertices_per_frame.append(layout.vertex_count)
        frame = server.begin_frame(f / hz, truth, trace.rigid(f))
        for _due, c, msg in [t for t in pending if t[0] == f]:
            decoders[c].on_message(msg)
        pending = [t for t in pending if t[0] != f]
        for c, dec in enumerate(decoders):
            if dec is None:
                continue
            server.set_focus(c, trace.focus(f, c % trace.clients))
            t0, c0 = time.perf_counter(), time.thread_time()
            data = server.encode(c)
            enc_us.append((time.perf_counter() - t0) * 1e6)
            enc_cpu_us.append((time.thread_time() - c0) * 1e6)
            sizes[c].append(len(data))
            for _due, seq in [a for a in acks[c] if a[0] == f]:
                server.on_ack(c, seq)
            acks[c] = [a for a in acks[c] if a[0] != f]
            decoded = False
            if rng.random() < loss:
                lost += 1
            else:
                t0 = time.perf_counter()
                try:
                    snap = dec.decode(data)
                except LateBaseError:
                    late_dropped += 1
                except SnapshotError as exc:
                    held += getattr(exc, "held", False)
                    rejected += not getattr(exc, "held", False)
                else:
                    decoded = True
                    dec_us.append((time.perf_counter() - t0) * 1e6)
                    acks[c].append((f + rtt_frames, snap.sequence))
                    for obj in snap.objects:
                        if obj.kind == "patch":
                            quant_err.append(float(np.max(np.abs(obj.positions - truth[layout.patch(obj.id)]))))
            if c < trace.clients and dec.layout is not None:
                now_approx = set(dec.approximate)
                approx_episodes += len(now_approx - approx_before[c])
                approx_before[c] = now_approx
                approx_counts.append(len(now_approx) / max(1, dec.layout.patch_count))
                approx_patch_frames += len(now_approx)
            if decoded and dec.epoch == frame.epoch:
                shown, received = dec.surface()
                if received.any():
                    err = float(np.max(np.abs(shown[received] - truth[received])))
                    display[c].append((f, err, bool(received.all())))
    main_sizes = np.array([s for c in range(trace.clients) for s in sizes[c]], float)
    n_vertices = float(np.mean(vertices_per_frame))
    side = float(np.sum(reliable[: trace.clients])) / len(main_sizes)
    topo = float(np.sum(topo_bytes[: trace.clients])) / len(main_sizes)
    total = float(main_sizes.mean()) + side
    # displayed error once joined: from the first frame the client holds every patch within 1 mm on
    errors, rest_errors, converged = [], [], []
    for c in range(n_clients):
        conv = next((f for f, e, full in display[c] if full and e <= JOINED_ERROR), None)
        if c < trace.clients:
            errors += [e for f, e, _ in display[c] if conv is not None and f >= conv]
            rest_errors += [e for f, e, _ in display[c] if conv is not None and f >= conv and at_rest[f]]
        converged.append(None if conv is None else round((conv - joined[c]) / hz, 3))
    err_a = np.array(errors or [np.nan])
    seen = bool(errors)
    per_frame = np.mean([sizes[c] for c in range(trace.clients)], axis=0) + reliable_at / trace.clients
    phases = {}
    for name, (lo, hi) in _phases(trace).items():
        lo, hi = max(0, lo), min(trace.frames, hi)
        if hi > lo:
            bits = float(per_frame[lo:hi].mean()) * 8 / float(np.mean(vertices_per_frame[lo:hi]))
            phases[name] = {"frames": [lo, hi], "bits_per_vertex_per_frame": round(bits, 3)}
    worst = 0.0  # the most any client's snapshots exceeded k budgets over any k consecutive frames
    if budget is not None:
        for c in range(n_clients):
            sums = np.concatenate([[0], np.cumsum(np.array(sizes[c], float) - budget)])
            if len(sums) > 1:
                worst = max(worst, float(np.max(sums - np.minimum.accumulate(sums))))
    doc = {
        "budget_bytes_per_frame": budget,
        "burst_bytes": burst if budget else None,
        "bytes_over_budget_max_over_any_frames": round(worst, 1),
        "surface_vertices_mean": round(n_vertices, 1),
        "bytes_per_frame_mean": round(float(main_sizes.mean()), 1),
        "bytes_per_frame_p99": round(float(np.percentile(main_sizes, 99)), 1),
        "bytes_per_frame_max": int(main_sizes.max()),
        "bytes_per_frame_mean_after_join": round(
            float(np.mean([s for c in range(trace.clients) for s in sizes[c][10:]])), 1
        ),
        "topology_messages": topo_messages,
        "topology_bytes_per_message": round(float(topo_bytes[0]) / max(1, topo_messages), 1),
        "topology_bytes_per_frame": round(topo, 1),
        "predictor_bytes_per_frame": round(side - topo, 1),
        "bytes_per_frame_with_reliable": round(total, 1),
        "bits_per_vertex_per_frame_snapshots": round(float(main_sizes.mean() * 8 / n_vertices), 3),
        "bits_per_vertex_per_frame": round(total * 8 / n_vertices, 3),
        "mbit_per_s_per_client": round(total * 8 * hz / 1e6, 3),
        "max_error_quantization_mm": round(max(quant_err) * 1e3, 5) if quant_err else None,
        "max_error_displayed_mm": round(float(err_a.max()) * 1e3, 4) if seen else None,
        "p99_error_displayed_mm": round(float(np.percentile(err_a, 99)) * 1e3, 4) if seen else None,
        "mean_of_frame_max_error_displayed_mm": round(float(err_a.mean()) * 1e3, 4) if seen else None,
        "phases": phases,
        "rest_frames": int(np.count_nonzero(at_rest)),
        "max_error_displayed_at_rest_mm": round(max(rest_errors) * 1e3, 4) if rest_errors else None,
        "converged_after_join_s": converged[: trace.clients],
        "encode_us_per_client_frame_mean": round(float(np.mean(enc_us)), 1),
        "encode_us_per_client_frame_median": round(float(np.median(enc_us)), 1),
        "encode_us_per_client_frame_p99": round(float(np.percentile(enc_us, 99)), 1),
        "encode_cpu_us_per_client_frame_mean": round(float(np.mean(enc_cpu_us)), 1),
        "decode_us_per_client_frame_mean": round(float(np.mean(dec_us)), 1),
        "decode_us_per_client_frame_median": round(float(np.median(dec_us)), 1),
        "decode_us_per_client_frame_p99": round(float(np.percentile(dec_us, 99)), 1),
        "snapshots_lost": lost,
        "snapshots_held_for_topology": held,
        "snapshots_rejected": rejected,
        "snapshots_dropped_late_base": late_dropped,
        "patch_entries_skipped": int(sum(d.skipped_entries for d in decoders[: trace.clients] if d is not None)),
        "approximate_patch_fraction": round(float(np.mean(approx_counts)), 5) if approx_counts else 0.0,
        "frames_with_an_approximate_patch_fraction": round(float(np.mean(np.array(approx_counts) > 0)), 4)
        if approx_counts
        else 0.0,
        "approximate_frames_per_episode_mean": round(approx_patch_frames / max(1, approx_episodes), 2),
        "envelope_bytes": len(snapshot_message(b"")),
    }
    if late_join is not None:
        late = np.array(sizes[-1] or [0], float)
        doc["late_joiner"] = {
            "join_frame": late_join,
            "converged_s": converged[-1],
            "bytes_per_frame_mean": round(float(late.mean()), 1),
            "reliable_bytes_at_join": int(reliable[-1] - topo_bytes[-1]),
        }
    return doc


def _phases(trace) -> dict[str, tuple[int, int]]:
    """The trace's named frame ranges (a recorded scene's script phases), in frame order."""
    named = trace.info.get("phases", {}) if isinstance(trace, RecordedTrace) else GENERATED_PHASES
    return dict(sorted(((k, (int(v[0]), int(v[1]))) for k, v in named.items()), key=lambda kv: kv[1]))


def _rest_frames(trace, positions: list[np.ndarray], bound: float) -> np.ndarray:
    """Frames at which the tissue is at rest: no vertex moved more than ``bound`` over the last REST_FRAMES
    frames (vertices matched by row; the rows are the trace's, stable across cuts)."""
    rest = np.zeros(trace.frames, bool)
    for f in range(REST_FRAMES, trace.frames):
        rest[f] = all(
            float(np.max(np.abs(positions[f] - positions[f - k]))) <= bound for k in range(1, REST_FRAMES + 1)
        )
    return rest


def warm_up(config: CodecConfig) -> None:
    """Compile (or load from the numba cache) every kernel on a tiny scene, so timings exclude it."""
    rest, _tris = surface_rest()
    ids = np.arange(0, len(rest), 37)
    layout = make_patches(ids, rest[ids], 50)
    server = SnapshotServer(layout, config, moving_error=DEFAULT_MOVING_ERROR)
    decoders = {}
    for c, budget in ((0, None), (1, 400)):
        decoders[c] = SnapshotDecoder()
        for msg in server.join_messages():
            decoders[c].on_message(msg)
        server.add_client(c, budget_bytes=budget)
    for f in range(4):
        server.begin_frame(f / HZ, rest[ids] + 0.001 * f, rigid_at(f, rest[0], 1))
        for c, dec in decoders.items():
            server.set_focus(c, rest[:1])
            server.on_ack(c, dec.decode(server.encode(c)).sequence)


def draco(trace: Trace | RecordedTrace, max_error: float, every: int, moving_error: float | None = None) -> dict | None:
    """Draco's bytes per frame (each frame compressed alone, mesh + positions) at <= max_error; with
    ``moving_error``, at the error our codec may show in each frame: ``max_error`` at rest, ``moving_error``
    in the frames where the tissue moves (``_rest_frames``)."""
    try:
        import DracoPy
    except ImportError:
        return None
    at_rest = None
    if moving_error is not None:
        at_rest = _rest_frames(trace, [trace.positions(f) for f in range(trace.frames)], max_error)
    bound = max_error
    sizes, errors, bits_used, off_model = [], [], [], 0
    for f in range(0, trace.frames, every):
        max_error = bound if at_rest is None or at_rest[f] else moving_error
        tris = [e for e in trace.epochs if e.frame <= f][-1].triangles
        ids = np.unique(tris)  # Draco drops unreferenced vertices anyway
        pos = trace.positions(f)[trace.rows(ids)]
        tris = np.searchsorted(ids, tris)
        extent = float(np.max(pos.max(axis=0) - pos.min(axis=0)))
        bits = max(1, math.ceil(math.log2(extent / (2 * max_error) + 1)))
        model = _draco_model(pos, bits)
        while float(np.max(np.abs(model - pos))) > max_error:
            bits += 1
            model = _draco_model(pos, bits)
        data = DracoPy.encode(pos, tris, quantization_bits=bits, compression_level=10)
        decoded = np.asarray(DracoPy.decode(data).points, float)
        lo = pos.min(axis=0)
        off_model += _points_off_model(decoded, model, lo, float(np.max(pos.max(axis=0) - lo)) / ((1 << bits) - 1))
        sizes.append(len(data))
        errors.append(float(np.max(np.abs(model - pos))))
        bits_used.append(bits)
    return {
        "frames_sampled": len(sizes),
        "bytes_per_frame_mean": round(float(np.mean(sizes)), 1),
        "quantization_bits": sorted(set(bits_used)),
        "compression_level": 10,
        "max_error_mm": round(max(errors) * 1e3, 5),
        "decoded_points_off_error_model": off_model,
        "mbit_per_s": round(float(np.mean(sizes)) * 8 * HZ / 1e6, 3),
    }


def _draco_model(pos: np.ndarray, bits: int) -> np.ndarray:
    """Draco's position quantization (of the float32 input): one range (the largest extent) from the
    per-axis minimum, nearest level."""
    pos = pos.astype(np.float32).astype(np.float64)
    lo = pos.min(axis=0)
    extent = float(np.max(pos.max(axis=0) - lo))
    levels = (1 << bits) - 1
    return lo + np.floor((pos - lo) * (levels / extent) + 0.5) * (extent / levels)


def _points_off_model(a: np.ndarray, b: np.ndarray, lo: np.ndarray, step: float) -> int:
    """How many of Draco's decoded points are not on our model's grid points (Draco reorders vertices,
    so compare the sorted multisets); 0 means the error we report is Draco's actual error."""
    if a.shape != b.shape:
        return max(len(a), len(b))
    ga, gb = (np.rint((x - lo) / step).astype(np.int64) for x in (a, b))
    if np.max(np.abs((a - lo) / step - ga)) > 1e-3:
        return len(a)
    return int(np.count_nonzero(np.any(ga[np.lexsort(ga.T)] != gb[np.lexsort(gb.T)], axis=1)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m netcode.sync.snapshot_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--trace", type=Path, action="append", default=[], help="a recorded trace (.npz; repeatable)")
    p.add_argument("--no-generated", action="store_true", help="skip the generated trace")
    p.add_argument(
        "--frames", type=int, default=None, help="generated trace frames (300); recorded ones: at most (all)"
    )
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rate", type=float, default=1_000_000, help="per-client link budget, bit/s (1e6)")
    p.add_argument(
        "--rate-vertices",
        type=int,
        default=10_000,
        help="also run each trace at --rate x its vertices / this (the same budget per vertex; 10000; 0: no)",
    )
    p.add_argument("--rtt-ms", type=float, default=100.0)
    p.add_argument("--loss", type=float, default=0.02, help="snapshot loss probability (0.02)")
    p.add_argument("--max-error", type=float, default=1e-4, help="metres (1e-4)")
    p.add_argument("--step", type=float, default=None, help="grid step, metres (default: = --max-error)")
    p.add_argument(
        "--moving-error",
        type=float,
        default=DEFAULT_MOVING_ERROR,
        help="bound of a moving patch, metres (5e-4; 0: --max-error always, as before)",
    )
    p.add_argument(
        "--anchor-every",
        type=int,
        default=DEFAULT_ANCHOR_EVERY,
        help="frames between a patch's deltas against acked versions at most (optimistic ones between; 1: none)",
    )
    p.add_argument(
        "--optimistic-motion",
        type=float,
        default=DEFAULT_OPTIMISTIC_MOTION,
        help="metres a patch may move in a frame and still be sent against an optimistic base (3e-3)",
    )
    p.add_argument(
        "--optimism",
        choices=(OPTIMISM_BOUND, OPTIMISM_ALL),
        default=OPTIMISM_BOUND,
        help="optimistic deltas to clients whose budget binds (bound) or to every client (all)",
    )
    p.add_argument(
        "--bound-window",
        type=int,
        default=DEFAULT_BOUND_WINDOW,
        help="a budgeted client gets optimistic deltas while its budget bound one of its last this many snapshots (30)",
    )
    p.add_argument("--patch-size", type=int, default=DEFAULT_PATCH_SIZE, help="vertices per patch at most")
    p.add_argument("--draco-every", type=int, default=10, help="compress every n-th frame with Draco (10)")
    p.add_argument("--no-predictor", action="store_true", help="no motion predictor")
    p.add_argument(
        "--burst-frames",
        type=float,
        default=1.0,
        help="a budgeted client may save this many frames' budget for a later snapshot (1; 0: none, as before)",
    )
    p.add_argument(
        "--late-join-s", type=float, default=2.0, help="a late joiner arrives this far into each trace (2 s)"
    )
    return p


def bench_trace(trace: Trace | RecordedTrace, config: CodecConfig, args: argparse.Namespace) -> dict:
    """Every figure for one trace: budgeted and unlimited runs, Draco, the ratio and the goals."""
    rtt_frames = max(1, round(args.rtt_ms / 1000 * trace.hz))
    n_vertices = len(trace.epochs[0].surface_ids)
    rate = args.rate
    budget = budget_for_rate(rate, trace.hz)
    moving = args.moving_error if args.moving_error > 0 else None
    kw = {
        "patch_size": args.patch_size,
        "predictor": not args.no_predictor,
        "moving_error": moving,
        "anchor_every": args.anchor_every,
        "optimistic_motion": args.optimistic_motion,
        "optimism": args.optimism,
        "bound_window": args.bound_window,
    }
    late = min(trace.frames - 1, round(args.late_join_s * trace.hz))
    budgeted = run(
        trace, config, budget, rtt_frames, args.loss, late_join=late, burst=round(args.burst_frames * budget), **kw
    )
    scaled = None
    if args.rate_vertices > 0 and n_vertices != args.rate_vertices:
        s_rate = args.rate * n_vertices / args.rate_vertices
        s_budget = budget_for_rate(s_rate, trace.hz)
        scaled = {
            "rate_bit_s": round(s_rate),
            **run(
                trace,
                config,
                s_budget,
                rtt_frames,
                args.loss,
                late_join=late,
                burst=round(args.burst_frames * s_budget),
                **kw,
            ),
        }
    unlimited = run(trace, config, None, rtt_frames, args.loss, **kw)
    dr = draco(trace, args.max_error, args.draco_every, moving)
    dr_fine = draco(trace, args.max_error, args.draco_every) if moving is not None else dr
    ours = unlimited["bytes_per_frame_with_reliable"]
    ratio = None if dr is None else round(ours / dr["bytes_per_frame_mean"], 4)
    ratio_fine = None if dr_fine is None else round(ours / dr_fine["bytes_per_frame_mean"], 4)
    late_s = budgeted["late_joiner"]["converged_s"]
    goals = {
        "at_most_1_bit_per_vertex_per_frame": unlimited["bits_per_vertex_per_frame"] <= 1.0,
        "at_most_0_5_bit_per_vertex_per_frame": unlimited["bits_per_vertex_per_frame"] <= 0.5,
        "at_most_one_eighth_of_draco": None if ratio is None else ratio <= 0.125,
        "budgeted_rate_within_budget": budgeted["bytes_over_budget_max_over_any_frames"]
        <= (budgeted["burst_bytes"] or 0) + 1e-9,
        "max_quantization_error_within_bound": (budgeted["max_error_quantization_mm"] or 0.0)
        <= max(args.max_error, moving or 0.0) * 1e3 + 1e-6,
        "budgeted_p99_displayed_at_most_1_mm": (budgeted["p99_error_displayed_mm"] or math.inf) <= 1.0,
        "budgeted_at_rest_at_most_bound": budgeted["max_error_displayed_at_rest_mm"] is None
        or budgeted["max_error_displayed_at_rest_mm"] <= args.max_error * 1e3 * (1 + 1e-6),
        "late_joiner_converged_within_0_5_s": late_s is not None and late_s <= 0.5,
        "encode_at_most_500_us": unlimited["encode_us_per_client_frame_mean"] <= 500
        and budgeted["encode_us_per_client_frame_mean"] <= 500,
        "decode_at_most_1000_us": unlimited["decode_us_per_client_frame_mean"] <= 1000,
    }
    info = {
        "name": trace.name,
        "file": str(getattr(trace, "path", "")) or None,
        "surface_vertices_first_epoch": n_vertices,
        "triangles_first_epoch": len(trace.epochs[0].triangles),
        "frames": trace.frames,
        "hz": trace.hz,
        "clients": trace.clients,
        "topology_changes": [f"{e.frame}:{e.cause}" for e in trace.epochs[1:]],
        "rtt_ms": args.rtt_ms,
        "loss": args.loss,
    }
    if isinstance(trace, RecordedTrace):
        info["scene"] = trace.info
    return {
        "trace": info,
        "budgeted": {"rate_bit_s": round(rate), **budgeted},
        "budgeted_per_vertex": scaled or "the trace has --rate-vertices vertices: as budgeted",
        "unlimited": unlimited,
        "draco": dr if dr is not None else "DracoPy not installed: skipped",
        "ratio_to_draco_unlimited": ratio,
        "draco_at_max_error": dr_fine if dr_fine is not None else "DracoPy not installed: skipped",
        "ratio_to_draco_at_max_error_unlimited": ratio_fine,
        "goal": {k: ("n/a" if v is None else ("pass" if v else "fail")) for k, v in goals.items()},
    }


SUMMARY = [
    ("unlimited", "bits_per_vertex_per_frame"),
    ("unlimited", "bits_per_vertex_per_frame_snapshots"),
    ("unlimited", "phases"),
    ("unlimited", "mbit_per_s_per_client"),
    ("unlimited", "topology_bytes_per_message"),
    ("unlimited", "topology_bytes_per_frame"),
    (None, "ratio_to_draco_unlimited"),
    (None, "ratio_to_draco_at_max_error_unlimited"),
    ("budgeted", "rate_bit_s"),
    ("budgeted", "p99_error_displayed_mm"),
    ("budgeted", "max_error_displayed_mm"),
    ("budgeted", "max_error_displayed_at_rest_mm"),
    ("budgeted", "late_joiner"),
    ("budgeted_per_vertex", "rate_bit_s"),
    ("budgeted_per_vertex", "p99_error_displayed_mm"),
    ("budgeted_per_vertex", "max_error_displayed_at_rest_mm"),
    ("budgeted_per_vertex", "late_joiner"),
    ("unlimited", "encode_us_per_client_frame_mean"),
    ("unlimited", "encode_us_per_client_frame_median"),
    ("unlimited", "encode_cpu_us_per_client_frame_mean"),
    ("unlimited", "decode_us_per_client_frame_mean"),
    ("unlimited", "decode_us_per_client_frame_median"),
    ("unlimited", "snapshots_held_for_topology"),
    ("unlimited", "approximate_patch_fraction"),
    ("unlimited", "frames_with_an_approximate_patch_fraction"),
    ("unlimited", "approximate_frames_per_episode_mean"),
]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = CodecConfig(PositionQuantizer(args.max_error, step=args.max_error if args.step is None else args.step))
    traces: list[Trace | RecordedTrace] = []
    if not args.no_generated:
        frames = 300 if args.frames is None else args.frames
        if frames <= CUT_FRAME:
            print(f"--frames must exceed the cut frame {CUT_FRAME}", file=sys.stderr)
            return 2
        traces.append(Trace(frames, args.clients))
    for path in args.trace:
        try:
            traces.append(RecordedTrace(path, args.clients, args.frames))
        except TraceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not traces:
        print("nothing to run: no --trace and --no-generated", file=sys.stderr)
        return 2
    warm_up(config)
    results = {}
    for trace in traces:
        print(f"running {trace.name} ({trace.frames} frames)", file=sys.stderr)
        results[trace.name] = bench_trace(trace, config, args)
    summary = {}
    for part, key in SUMMARY:
        row = {}
        for name, r in results.items():
            v = r[key] if part is None else r[part].get(key) if isinstance(r[part], dict) else None
            if key == "late_joiner" and isinstance(v, dict):
                v = v["converged_s"]
            elif key == "phases" and isinstance(v, dict):
                v = {k: p["bits_per_vertex_per_frame"] for k, p in v.items()}
            row[name] = v
        summary[key if part is None else f"{part}.{key}"] = row
    doc = {
        "codec": {
            "max_error_mm": args.max_error * 1e3,
            "moving_error_mm": None if args.moving_error <= 0 else args.moving_error * 1e3,
            "grid_step_mm": config.positions.grid * 1e3,
            "rotation_bits": config.rotation_bits,
            "patch_size": args.patch_size,
            "motion_predictor": not args.no_predictor,
            "rate_bit_s_per_vertices": [args.rate, args.rate_vertices],
        },
        "summary": summary,
        "traces": results,
    }
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
