"""Knots of known type drawn as thread polylines, for the knot and suturing tests.

The throws are built from 4-plat closures of 4-strand braids (rational knots, whose types are textbook): Conway
C(1, 2) is the trefoil (a single throw), C(3, 2) the 5_2 twist knot (a double throw), C(2, 2) the figure-eight;
and a parametric trefoil checks them independently. A thread ties several throws as a connected sum: each
throw sits in its own box above the thread's path, entered and left through the box's floor.
"""

import numpy as np

SEG = 0.001  # m: the test threads' segment length


def plat(word: list[tuple[int, int]], n: int = 10, h: float = 0.35) -> np.ndarray:
    """Plat closure of a 4-strand braid word [(i, s)]: sigma_{i+1} swaps positions i, i+1, the strand moving
    right passing over (z > 0) when s > 0; caps join positions (0, 1) and (2, 3) below and above. Returns
    the curve as an open arc from the foot of strand 0 up, around, and back down to the foot of strand 1 (the
    last cap, below, left out): a long knot whose two ends point down."""
    levels = len(word)
    tt = np.linspace(0.0, 1.0, n, endpoint=False)

    def level(lv: int, p: int) -> tuple[np.ndarray, int]:
        i, s = word[lv]
        if p in (i, i + 1):
            q = i + 1 if p == i else i
            x = p + (q - p) * (1 - np.cos(np.pi * tt)) / 2
            z = (s if p == i else -s) * h * np.sin(np.pi * tt)
        else:
            q, x, z = p, np.full(n, float(p)), np.zeros(n)
        return np.stack([x, lv + tt, z], axis=1), q

    def cap(p: int, y: float, sign: float) -> np.ndarray:
        q = p ^ 1
        a = np.linspace(0.0, np.pi, n, endpoint=False)
        return np.stack([(p + q) / 2 - (q - p) / 2 * np.cos(a), y + sign * 0.5 * np.sin(a), np.zeros(n)], axis=1)

    pts, p = [], 0
    while True:
        for lv in range(levels):
            seg, p = level(lv, p)
            pts.append(seg)
        pts.append(cap(p, levels, 1.0))
        p ^= 1
        for lv in range(levels - 1, -1, -1):
            i, _ = word[lv]
            src = (i + 1 if p == i else i) if p in (i, i + 1) else p
            pts.append(level(lv, src)[0][::-1])
            p = src
        if p == 1:
            pts.append(np.array([[1.0, 0.0, 0.0]]))
            return np.concatenate(pts)
        pts.append(cap(p, 0.0, -1.0))
        p ^= 1


def twist_knot(a1: int) -> list[tuple[int, int]]:
    """Conway C(a1, 2) = [a1, 1, 1] as a 4-plat word."""
    return [(1, 1)] * a1 + [(0, -1), (1, 1)]


SINGLE = twist_knot(1)  # trefoil, left-handed as built
DOUBLE = twist_knot(3)  # 5_2, left-handed as built
FIGURE_EIGHT = twist_knot(2)


def throw(word, hand: int) -> np.ndarray:
    """A throw as a long knot of unit-ish size, ends down at x = 0 and x = 1; hand +1 right-handed."""
    c = plat(word)
    return c * np.array([1.0, 1.0, -1.0]) if hand > 0 else c


def thread(modules: list[np.ndarray], size: float, seg: float = SEG, lead: float = 0.04) -> np.ndarray:
    """A thread along x with each module (a long knot, ends down) tied `size` m across, sampled at `seg`."""
    path = [np.array([[-lead, -0.5 * size, 0.0]])]
    x0 = 0.0
    for m in modules:
        width = float(np.ptp(m[:, 0]))
        s = size / max(width, float(np.ptp(m[:, 1])))
        body = (m - m[0]) * s + np.array([x0, 0.0, 0.0])
        path += [body[:1] + np.array([0.0, -0.5 * size, 0.0]), body, body[-1:] + np.array([0.0, -0.5 * size, 0.0])]
        x0 += (width + 0.8) * s
    path.append(np.array([[x0 + lead, -0.5 * size, 0.0]]))
    return resample(np.concatenate(path), seg)


def resample(c: np.ndarray, seg: float) -> np.ndarray:
    """The polyline at even arc-length spacing seg (like a simulated thread's particles)."""
    d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))])
    s = np.linspace(0.0, d[-1], max(2, round(d[-1] / seg) + 1))
    return np.stack([np.interp(s, d, c[:, k]) for k in range(3)], axis=1)


def rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def parametric_trefoil(n: int = 120) -> np.ndarray:
    """The textbook trefoil (sin t + 2 sin 2t, cos t - 2 cos 2t, -sin 3t), cut open at its outermost point."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c = np.stack([np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t), -np.sin(3 * t)], axis=1)
    k = int(np.argmax(np.linalg.norm(c, axis=1)))
    return np.roll(c, -k, axis=0)[1:-1]


SQUARE = [throw(SINGLE, 1), throw(SINGLE, -1)]
GRANNY = [throw(SINGLE, 1), throw(SINGLE, 1)]
SURGEONS = [throw(DOUBLE, 1), throw(SINGLE, -1)]
