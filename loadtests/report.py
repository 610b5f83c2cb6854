"""Run output: a folder per run, JSON files, and figures taken from the swarm's bot reports.

Bot reports carry times relative to their worker's start (``began``, monotonic); ``bots_of`` puts every
bot on the run's clock (``t_offset``) so that windows and plots line up with the server's tick records.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np


def run_folder(base: Path | str | None, name: str) -> Path:
    """``base/<name>-<UTC time>`` (base defaults to ./loadtest-runs), created."""
    root = Path(base) if base is not None else Path("loadtest-runs")
    folder = root / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        f = float(value)
        return round(f, 6) if math.isfinite(f) else None
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(_plain(data), indent=1))
    return path


def dumps(data: Any) -> str:
    return json.dumps(_plain(data), indent=1)


def bots_of(results: list[dict[str, Any]], origin: float) -> list[dict[str, Any]]:
    """Every bot of every worker report, with ``t_offset`` (worker start - origin) and ``began``."""
    out = []
    for result in results:
        began = float(result.get("began", origin))
        for bot in result.get("bots", []):
            out.append({**bot, "t_offset": began - origin, "began": began})
    return out


def rtt_window(bots: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    """RTT quantiles (ms) of every bot's samples taken between t0 and t1 (monotonic)."""
    values = []
    for bot in bots:
        began = bot.get("began", 0.0)
        values.extend(r for t, r in bot.get("rtt_series", []) if t0 <= began + t < t1)
    if not values:
        return {"count": 0}
    q = np.quantile(values, [0.5, 0.99])
    return {"count": len(values), "p50_ms": round(1000 * q[0], 2), "p99_ms": round(1000 * q[1], 2)}


def downlink_window(bots: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    """Mean downlink kbit/s per client (by role) over the whole seconds inside [t0, t1)."""
    by_role: dict[str, list[float]] = {}
    for bot in bots:
        began = bot.get("began", 0.0)
        inside = [n for s, n in bot.get("down_bytes_per_second", []) if t0 <= began + s and began + s + 1 <= t1]
        if inside:
            by_role.setdefault(str(bot.get("role")), []).append(8 * float(np.mean(inside)) / 1000)
    return {role: round(float(np.mean(v)), 1) for role, v in sorted(by_role.items())}


def slim(bot: dict[str, Any]) -> dict[str, Any]:
    """A bot report without its long series (for the printed JSON)."""
    drop = {"down_bytes_per_second", "rtt_series", "events", "snapshot_arrivals", "commanded", "rigid_seen"}
    return {k: v for k, v in bot.items() if k not in drop}
