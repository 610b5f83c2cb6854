"""A small deterministic scene for the snapshot codec tests (numpy only)."""

from __future__ import annotations

import numpy as np

from netcode.sync.patches import PatchLayout, make_patches
from netcode.sync.snapshot import RigidKind, RigidSet
from netcode.sync.snapshot_codec import SnapshotServer
from netcode.sync.snapshot_decode import SnapshotDecoder

GRID = 24


def grid_surface(n: int = GRID, size: float = 0.05) -> np.ndarray:
    u = np.linspace(0.0, size, n)
    x, z = np.meshgrid(u, u, indexing="ij")
    y = 0.01 * np.exp(-((x - size / 2) ** 2 + (z - size / 2) ** 2) / 0.0005)
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


class Scene:
    """A surface with a moving bump and three rigid objects; truth per frame, deterministic."""

    def __init__(self, seed: int = 0, n: int = GRID, patch_size: int = 40) -> None:
        self.rest = grid_surface(n)
        self.ids = np.arange(len(self.rest))
        self.rng = np.random.default_rng(seed)
        self.layout: PatchLayout = make_patches(self.ids, self.rest, patch_size)
        self.centre = self.rest[len(self.rest) // 2 + n // 2]

    def surface(self, frame: int, *, move: bool = True, jitter: float = 3e-5) -> np.ndarray:
        w = np.exp(-np.sum((self.rest - self.centre) ** 2, axis=1) / (2 * 0.008**2))
        offset = np.array([0.0, 0.0004 * frame, 0.0002 * frame]) if move else np.zeros(3)
        pos = self.rest + w[:, None] * offset + self.rng.uniform(-jitter, jitter, self.rest.shape)
        return pos[self.layout.vertex_ids]

    def rigid(self, frame: int) -> RigidSet:
        t = frame / 60
        pos = np.array([self.centre + np.array([0, 0.002 + 0.001 * t, 0]), [0.01, 0.03, 0.01 * t], [0.0, 0.4, -0.3]])
        ang = np.array([0.3 * t, 1.0 * t, 0.05])
        axes = np.array([[0, 1.0, 0], [0.6, 0.8, 0], [1.0, 0, 0]])
        quats = np.concatenate([axes * np.sin(ang / 2)[:, None], np.cos(ang / 2)[:, None]], axis=1)
        jaws = np.array([0.2 + 0.1 * np.sin(t), np.nan, np.nan])
        kinds = np.array([RigidKind.INSTRUMENT, RigidKind.INSTRUMENT, RigidKind.HEAD])
        return RigidSet(np.array([0, 1, 7]), kinds, pos, quats, jaws)


def connect(server: SnapshotServer, client_id: object, budget: int | None = None, **kw) -> SnapshotDecoder:
    """Add a client and a decoder that received the join messages."""
    server.add_client(client_id, budget_bytes=budget, **kw)
    decoder = SnapshotDecoder()
    for message in server.join_messages():
        decoder.on_message(message)
    return decoder


def state_of(decoder: SnapshotDecoder) -> tuple:
    """Everything observable about a decoder's state (to check a rejected snapshot changed nothing)."""
    rigid = {k: (v.positions.tobytes(), v.orientation.tobytes(), v.jaw) for k, v in decoder.rigid().items()}
    surface, received = decoder.surface()
    versions = [sorted(v) for v in decoder._patch_versions]
    return (
        decoder.epoch,
        surface.tobytes(),
        received.tobytes(),
        rigid,
        tuple(decoder._applied),
        str(versions),
        str({k: sorted(v) for k, v in decoder._rigid_versions.items()}),
    )


# bit strings in stream order (LSB-first within bytes), to write malformed snapshots by hand


def bits_of(value: int, n: int) -> str:
    """``n`` bits of ``value`` in stream order (LSB first)."""
    return "".join(str(value >> i & 1) for i in range(n))


def eg0(value: int) -> str:
    """Exp-Golomb code of order 0 in stream order: z zeros, a one, then the z low bits of value + 1."""
    w = value + 1
    z = w.bit_length() - 1
    return "0" * z + "1" + bits_of(w, z)


def to_bytes(bits: str) -> bytes:
    """A bit string in stream order (a multiple of 8 long) as bytes, LSB-first."""
    return bytes(int(bits[i : i + 8][::-1], 2) for i in range(0, len(bits), 8))
