"""PNG plots of a run for a person to look at (matplotlib, the optional ``load`` extra).

Every function returns the path it wrote, or None when matplotlib is missing (``available()`` says why:
``pip install -e '.[load]'``) or there was nothing to draw. Nothing here raises on odd data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BUDGET_MS = 1000.0 / 60.0


def available() -> str | None:
    """None if matplotlib can draw; otherwise the note to print."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
    except Exception:  # ImportError, or a broken backend
        return "matplotlib is not installed: plots skipped (pip install -e '.[load]')"
    return None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tick_distribution(ticks: np.ndarray, phases: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Per phase: tick-time histogram (left) and p50/p99 per phase against the 16.7 ms budget (right)."""
    if available() is not None or ticks.size == 0:
        return None
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    bins = np.linspace(0, 50, 101)
    labels, p50, p99 = [], [], []
    for phase in phases:
        sel = ticks[(ticks[:, 0] >= phase["t0"]) & (ticks[:, 0] < phase["t1"])][:, 1] * 1000
        if sel.size == 0:
            continue
        left.hist(np.clip(sel, 0, 50), bins=bins, histtype="step", density=True, label=phase["label"])
        labels.append(phase["label"])
        p50.append(float(np.median(sel)))
        p99.append(float(np.quantile(sel, 0.99)))
    left.axvline(BUDGET_MS, color="red", linestyle="--", label="16.7 ms budget")
    left.set_xlabel("room tick time (ms; step + publish)")
    left.set_ylabel("density")
    left.legend(fontsize=7)
    x = np.arange(len(labels))
    right.plot(x, p50, "o-", label="p50")
    right.plot(x, p99, "s-", label="p99")
    right.axhline(BUDGET_MS, color="red", linestyle="--", label="budget")
    right.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    right.set_ylabel("tick time (ms)")
    right.legend()
    fig.suptitle(title or "tick time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def bandwidth(bots: list[dict[str, Any]], path: Path, title: str = "", max_lines: int = 80) -> Path | None:
    """Downlink kbit/s per client over time (one thin line per client, coloured by role)."""
    if available() is not None or not bots:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 5))
    colours = {"observer": "tab:blue", "mentor": "tab:green", "lead_surgeon": "tab:red"}
    drawn = set()
    for bot in bots[:max_lines]:
        series = bot.get("down_bytes_per_second") or []
        if not series:
            continue
        t = [s + bot.get("t_offset", 0.0) for s, _ in series]
        v = [8 * n / 1000 for _, n in series]
        role = bot.get("role") or "?"
        colour = colours.get(role, "tab:orange")
        ax.plot(t, v, color=colour, linewidth=0.7, alpha=0.7, label=None if role in drawn else role)
        drawn.add(role)
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("downlink kbit/s per client")
    ax.legend()
    ax.set_title(title or "bandwidth per client")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def rtt(bots: list[dict[str, Any]], path: Path, title: str = "", marks: list[tuple[float, float]] | None = None):
    """RTT samples (ping/pong through the server's reactor) over time, one colour per client."""
    if available() is not None or not bots:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 5))
    for bot in bots[:80]:
        series = bot.get("rtt_series") or []
        if series:
            t = [s + bot.get("t_offset", 0.0) for s, _ in series]
            ax.plot(
                t, [1000 * r for _, r in series], ".", markersize=2, label=bot.get("name") if len(bots) <= 10 else None
            )
    for a, b in marks or []:
        ax.axvspan(a, b, color="red", alpha=0.2)
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("RTT (ms)")
    ax.set_yscale("log")
    if len(bots) <= 10 and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.set_title(title or "round-trip time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def process(rows: list[dict[str, Any]], path: Path, title: str = "", t0: float = 0.0) -> Path | None:
    """Server RSS (MB), open fds and CPU % over time."""
    if available() is not None or len(rows) < 2:
        return None
    plt = _plt()
    t = np.array([r["t"] - t0 for r in rows])
    rss = np.array([r["rss_bytes"] / 2**20 for r in rows])
    fds = np.array([r["fds"] for r in rows])
    cpu = np.array([r["cpu_seconds"] for r in rows])
    cpu_pct = np.concatenate([[0.0], 100 * np.diff(cpu) / np.maximum(np.diff(t), 1e-6)])
    fig, axes = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    axes[0].plot(t, rss)
    axes[0].set_ylabel("RSS (MB)")
    axes[1].plot(t, fds)
    axes[1].set_ylabel("open fds")
    axes[2].plot(t, cpu_pct)
    axes[2].set_ylabel("server CPU %")
    axes[2].set_xlabel("time since the run started (s)")
    fig.suptitle(title or "server process")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tick_timeline(ticks: np.ndarray, path: Path, title: str = "", t0: float = 0.0, marks=None) -> Path | None:
    """Every room tick's time over the run (dots), with the budget line and marked intervals."""
    if available() is not None or ticks.size == 0:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 4))
    step = max(1, len(ticks) // 50_000)
    ax.plot(ticks[::step, 0] - t0, 1000 * ticks[::step, 1], ".", markersize=1)
    ax.axhline(BUDGET_MS, color="red", linestyle="--")
    for a, b, label in marks or []:
        ax.axvspan(a - t0, b - t0, color="orange", alpha=0.2)
        ax.text(a - t0, ax.get_ylim()[1] * 0.9, label, fontsize=7)
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("tick time (ms)")
    ax.set_title(title or "tick time over the run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
