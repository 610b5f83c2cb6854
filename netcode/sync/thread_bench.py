"""Bytes per frame of the suture thread's sync (``thread_polyline``), replaying a thread recorded from the physics.

    python -m rehearsal.suture_trace --out suture.npz          # the physics: press, stitch, pull (200 segments)
    python -m netcode.sync.thread_bench --trace suture.npz     # JSON on stdout

Every frame of the trace goes through a ``ThreadStream`` to clients whose acks come back a round trip later: one
that loses nothing and ``--clients`` that lose ``--loss`` of the messages (and of the acks) independently. Reported
(JSON): the keyframe (a full record), bytes per frame (payload; ``_with_envelope`` adds the msgpack envelope) overall
and per phase of the trace, kbit/s at the frame rate, bits per point per frame, the largest error a client shows,
full records sent, and the encoder's CPU time per client and frame. The trace is the physics' own (netcode does not
import physics; ``rehearsal.suture_trace`` writes it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

from netcode.sync.snapshot import DEFAULT_CONFIG
from netcode.sync.thread_polyline import THREAD_ENVELOPE, ThreadDecoder, ThreadStream, read_thread_header

PHASES = ("press", "stitch", "pull")


def load_trace(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(points (F, n, 3), phase (F,), dt) of a ``suture-trace/1`` file; ValueError for another file."""
    with np.load(path) as data:
        if str(data.get("format", "")) != "suture-trace/1":
            raise ValueError(f"{path} is not a suture-trace/1 file (python -m rehearsal.suture_trace writes one)")
        return np.asarray(data["points"], np.float64), np.asarray(data["phase"]), float(data["dt"])


def run(points: np.ndarray, phase: np.ndarray, dt: float, clients: int, loss: float, rtt: float, seed: int) -> dict:
    """Replay the frames to a lossless client and ``clients`` lossy ones (see the module doc)."""
    rng = np.random.default_rng(seed)
    rtt_frames = max(1, round(rtt / dt))
    stream = ThreadStream(DEFAULT_CONFIG)
    names = ["lossless", *[f"lossy{i}" for i in range(clients)]]
    decoders = {name: ThreadDecoder(DEFAULT_CONFIG) for name in names}
    for name in names:
        stream.add_client(name, resend_after=rtt_frames + 2)
    acks: deque = deque()  # (frame it arrives, client, ack fields)
    sizes = {name: np.zeros(len(points), np.int64) for name in names}
    errors = {name: [] for name in names}
    keyframe = 0
    ages: list[int] = []  # the lossless client's deltas: how old their baselines were
    encode_seconds: list[float] = []  # per client-frame, after the first frame (which loads the kernels)
    for f, pts in enumerate(points, start=1):
        while acks and acks[0][0] <= f:
            _, name, fields = acks.popleft()
            stream.on_ack_fields(name, **fields)
        stream.begin_frame(f, f * dt, pts)
        for name in names:
            started = time.perf_counter()
            data = stream.encode(name)
            if f > 1:
                encode_seconds.append(time.perf_counter() - started)
            if data is None:
                continue
            sizes[name][f - 1] = len(data)
            if name == "lossless":
                if f == 1:
                    keyframe = len(data)
                age = read_thread_header(data).age
                if age:
                    ages.append(age)
            lossy = name != "lossless"
            if lossy and rng.random() < loss:
                continue
            dec = decoders[name]
            dec.apply(data)
            if not (lossy and rng.random() < loss):
                acks.append((f + rtt_frames, name, dec.ack_fields()))
        for name in names:
            dec = decoders[name]
            if dec.sequence is not None and len(dec.points()) == len(pts):
                errors[name].append(float(np.abs(dec.points() - pts).max()))
    n_points = points.shape[1]
    base = sizes["lossless"]
    frames = len(points)
    lossy_sizes = np.concatenate([sizes[n] for n in names[1:]]) if clients else np.zeros(0)

    def stats(values: np.ndarray) -> dict:
        values = np.asarray(values, np.float64)
        return {
            "mean": round(float(values.mean()), 1),
            "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)),
            "max": int(values.max()),
        }

    sent = base[base > 0]
    per_phase = {}
    for k, label in enumerate(PHASES):
        mask = phase[:frames] == k
        if mask.any():
            per_phase[label] = {"frames": int(mask.sum()), "bytes_mean": round(float(base[mask].mean()), 1)}
    mean_wire = float(base.mean()) + THREAD_ENVELOPE * len(sent) / frames
    return {
        "frames": frames,
        "points": int(n_points),
        "segments": int(n_points - 1),
        "max_error_m": DEFAULT_CONFIG.positions.max_error,
        "frame_rate": round(1.0 / dt, 3),
        "rtt_ms": rtt * 1000,
        "keyframe_bytes": keyframe,
        "bytes_per_frame": stats(base),
        "bytes_per_frame_with_envelope": round(mean_wire, 1),
        "bytes_per_message": stats(sent) if len(sent) else None,
        "per_phase": per_phase,
        "kbit_per_s": round(mean_wire * 8 / dt / 1000, 1),
        "bits_per_point_per_frame": round(float(base.mean()) * 8 / n_points, 3),
        "full_records": stream.clients["lossless"].stats["full"],
        "max_error_shown_m": max(errors["lossless"]) if errors["lossless"] else None,
        "lossy": {
            "clients": clients,
            "loss": loss,
            "bytes_per_frame_mean": round(float(lossy_sizes.mean()), 1) if clients else None,
            "full_records": sum(stream.clients[n].stats["full"] for n in names[1:]),
            "missing_baselines": sum(decoders[n].missing_baselines for n in names[1:]),
            "error_shown_p99_m": float(np.percentile(np.concatenate([errors[n] for n in names[1:]]), 99))
            if clients
            else None,
        },
        "encode_us_per_client_frame": round(float(np.median(encode_seconds)) * 1e6, 1) if encode_seconds else None,
        "encode_us_per_client_frame_p99": (
            round(float(np.percentile(encode_seconds, 99)) * 1e6, 1) if encode_seconds else None
        ),
        "delta_age_frames_mean": round(float(np.mean(ages)), 2) if ages else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trace", type=Path, required=True, help="a suture-trace/1 file (rehearsal.suture_trace)")
    parser.add_argument("--clients", type=int, default=3, help="lossy clients beside the lossless one")
    parser.add_argument("--loss", type=float, default=0.02, help="message and ack loss of the lossy clients")
    parser.add_argument("--rtt", type=float, default=0.1, help="round trip (s): acks arrive this much later")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        points, phase, dt = load_trace(args.trace)
    except (OSError, ValueError, KeyError) as exc:
        print(f"thread_bench: {exc}", file=sys.stderr)
        return 2
    result = {"trace": str(args.trace), **run(points, phase, dt, args.clients, args.loss, args.rtt, args.seed)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
