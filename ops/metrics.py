"""Prometheus metrics for the rehearsal server, on a private registry (never the global one).

Two halves, both cheap for the app:

* ``StatusCollector(status)`` calls ``status()`` once per scrape and turns the plain dict it returns
  into metric families. The app keeps counting with its own ``Counter``s; nothing is called per event.
* ``Histograms`` holds the few distributions that need per-event ``observe()`` (tick time, physics step,
  publishing, RTT, snapshot size). They carry no labels, so the hot path is one ``observe()`` call with no
  ``.labels()`` lookup (DESIGN: ``.labels()`` per call doubles the cost).

``OpsMetrics(status)`` builds both on one ``CollectorRegistry``, with prometheus-client's process collector
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``process_open_fds``, ``process_max_fds``,
...: read from /proc at scrape time).

Status dict shape (every key optional; a missing key exports zero / no samples, so the set of
metric *names* never depends on the app's state)::

    {
        "rooms": {"running": 3, "lobby": 1, "degraded": 0, ...},   # rooms by state      -> gauge
        "participants": {"lead_surgeon": 2, "observer": 5, ...},   # by role            -> gauge
        "substeps": {"min": 2, "max": 8},                          # solver substeps in use across
                                                                   #   rooms (or a flat {room: n}
                                                                   #   mapping: min/max are taken)
        "packets": {"in": 1234, "out": 5678},                      # monotonic          -> counter
        "bytes": {"in": 123456, "out": 987654},                    # monotonic          -> counter
        "drops": {"bad_mac": 3, "replay": 1, ...},                 # dropped packets by reason
        "rejected_inputs": {"nonfinite": 1, "too_fast": 4, ...},   # rejected inputs by reason
        "handshakes": {"accepted": 10, "refused": 1, ...},         # handshakes by outcome
        "refusals": {"input_samples": 3, "commands": 1, ...},      # work refused over a budget, by reason
        "solver": {"inverted": 0, "clamped": 2},                   # solver health events by kind
        "fixtures": {"violations": 3, "energy_cuts": 1, ...},      # virtual fixture enforcement by kind
        "ticks": 100000,                                           # ticks run (monotonic)
        "tick_overruns": 12,                                       # ticks over budget (monotonic)
        "tick_budget_utilisation": 0.42,                           # worst room: last tick / budget
        "packet_loss_ratio": 0.01,                                 # mean estimated loss, 0..1
        "web_observers": 4,                                        # browser pages with the observer role
        "websocket_bytes_sent": 123456,                            # to browser pages (monotonic)
        "page_errors": 2,                                          # errors pages reported (monotonic)
        "checkpoints": {"written": 40, "failed": 1},               # room checkpoints by outcome
        "sessions_resumed": 2,                                     # resumed after a crash (monotonic)
        "interrupted_results": 1,                                  # could not resume: stored as interrupted
        "journal_writes": {"written": 12, "failed": 0},            # action journal writes by outcome
        "journal_write_seconds": 0.03,                             # time spent writing it (monotonic)
        "failures": {"results_not_saved": 0, "publish_failed": 1},   # failures by what (monotonic; the app
                                                                   #   gives every kind from the start, 0)
        "room_stats": {                                            # per room (label `session`), at most
            "s-abc": {                                             #   MAX_ROOM_SERIES rooms; the key is
                                                                   #   the label: the app gives an opaque
                                                                   #   one (scrapes are anonymous)
                "scenario": "basic_skills", "state": "running",
                "participants": {"lead_surgeon": 1},               # connected, by role
                "substeps": 20, "degraded": False,
                "ticks": 6000, "tick_overruns": 3,                 # monotonic over the room's life
                "tick_histogram": {"buckets": [[0.001, 0], ..., [0.1, 5990]],   # cumulative per le
                                   "sum": 25.1, "count": 5990},
                "physics_step_histogram": {...},                   # the same shape
            },
        },
    }

Label values are strings; counts are ints or floats. Counter values must be monotonic over the life
of the process (the app's ``Counter``s are).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "EXPOSITION_CONTENT_TYPE",
    "HISTOGRAM_NAMES",
    "MAX_ROOM_SERIES",
    "ROOM_METRICS",
    "STATUS_METRICS",
    "Histograms",
    "OpsMetrics",
    "StatusCollector",
    "exported_names",
]

log = logging.getLogger(__name__)

EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Buckets: tick budget is 16.7 ms at 60 Hz; resolve 1-50 ms finely around it.
TICK_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.010, 0.012, 0.014, 0.0167, 0.020, 0.025, 0.033, 0.050, 0.100)
PHYSICS_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.010, 0.012, 0.0167, 0.025, 0.050, 0.100)
RTT_BUCKETS = (0.005, 0.010, 0.020, 0.030, 0.050, 0.075, 0.100, 0.150, 0.200, 0.300, 0.500, 1.0, 2.0)
CHECKPOINT_BUCKETS = (0.005, 0.010, 0.025, 0.050, 0.100, 0.250, 0.500, 1.0, 2.5, 5.0)
SNAPSHOT_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)

HISTOGRAM_NAMES = (
    "rehearsal_tick_duration_seconds",
    "rehearsal_physics_step_duration_seconds",
    "rehearsal_publish_duration_seconds",
    "rehearsal_rtt_seconds",
    "rehearsal_snapshot_bytes",
    "rehearsal_checkpoint_duration_seconds",
)

# (metric name as exposed, type, label name or None, status key, help)
STATUS_METRICS: tuple[tuple[str, str, str | None, str, str], ...] = (
    ("rehearsal_rooms", "gauge", "state", "rooms", "Rooms by lifecycle state."),
    ("rehearsal_participants", "gauge", "role", "participants", "Participants connected, by role."),
    ("rehearsal_substeps", "gauge", "stat", "substeps", "Solver substeps in use across rooms (min/max)."),
    ("rehearsal_packets_total", "counter", "direction", "packets", "UDP packets by direction (in/out)."),
    ("rehearsal_bytes_total", "counter", "direction", "bytes", "UDP payload bytes by direction (in/out)."),
    ("rehearsal_dropped_packets_total", "counter", "reason", "drops", "Packets dropped, by reason."),
    ("rehearsal_rejected_inputs_total", "counter", "reason", "rejected_inputs", "Instrument inputs rejected."),
    ("rehearsal_handshakes_total", "counter", "outcome", "handshakes", "Connection handshakes, by outcome."),
    (
        "rehearsal_refusals_total",
        "counter",
        "reason",
        "refusals",
        "Requests refused before any work (a budget spent, a bound exceeded), by reason.",
    ),
    ("rehearsal_solver_events_total", "counter", "kind", "solver", "Solver health events (inverted/clamped)."),
    (
        "rehearsal_fixture_events_total",
        "counter",
        "kind",
        "fixtures",
        "Virtual fixtures: tips stopped at forbidden regions (violations), pedals cut in no-energy zones "
        "(energy_cuts, energy_cut_ticks), toggles refused (refused_toggles).",
    ),
    ("rehearsal_ticks_total", "counter", None, "ticks", "Room ticks run."),
    ("rehearsal_tick_overruns_total", "counter", None, "tick_overruns", "Room ticks that overran their budget."),
    (
        "rehearsal_tick_budget_utilisation_ratio",
        "gauge",
        None,
        "tick_budget_utilisation",
        "Worst room's last tick time over its budget (1.0 = full).",
    ),
    ("rehearsal_packet_loss_ratio", "gauge", None, "packet_loss_ratio", "Mean estimated packet loss, 0..1."),
    ("rehearsal_web_observers", "gauge", None, "web_observers", "Browser pages connected with the observer role."),
    (
        "rehearsal_websocket_bytes_sent_total",
        "counter",
        None,
        "websocket_bytes_sent",
        "Bytes sent to browser pages in WebSocket messages.",
    ),
    ("rehearsal_page_errors_total", "counter", None, "page_errors", "Errors browser pages reported to the server."),
    (
        "rehearsal_checkpoints_total",
        "counter",
        "outcome",
        "checkpoints",
        "Room checkpoints by outcome (written; failed: taking or writing one).",
    ),
    (
        "rehearsal_sessions_resumed_total",
        "counter",
        None,
        "sessions_resumed",
        "Sessions resumed from their checkpoints when the server started after a crash.",
    ),
    (
        "rehearsal_interrupted_results_total",
        "counter",
        None,
        "interrupted_results",
        "Sessions that could not resume after a crash: their results stored as interrupted.",
    ),
    (
        "rehearsal_journal_writes_total",
        "counter",
        "outcome",
        "journal_writes",
        "Acknowledged mentor actions and steps written to the action journal, by outcome (written/failed).",
    ),
    (
        "rehearsal_journal_write_seconds_total",
        "counter",
        None,
        "journal_write_seconds",
        "Time spent writing the action journal (synchronous commits on the reactor thread).",
    ),
    (
        "rehearsal_failures_total",
        "counter",
        "what",
        "failures",
        "Things that went wrong inside the server, by what (results_not_saved, tick_loop_failed, ...); each has an "
        "alert and a runbook section (ops/alerts.yml, ops/RUNBOOK.md).",
    ),
)

# Per-room families (label `session`; DESIGN: per room where cardinality allows).
# (metric name as exposed, type, extra label or None, room-stats key, help)
ROOM_METRICS: tuple[tuple[str, str, str | None, str, str], ...] = (
    ("rehearsal_room_info", "gauge", None, "", "1 per room, with its scenario and lifecycle state as labels."),
    ("rehearsal_room_participants", "gauge", "role", "participants", "Participants connected to a room, by role."),
    ("rehearsal_room_substeps", "gauge", None, "substeps", "Solver substeps a room runs with now."),
    ("rehearsal_room_degraded", "gauge", None, "degraded", "1 while a room runs below its nominal substeps."),
    ("rehearsal_room_ticks_total", "counter", None, "ticks", "Ticks a room has run."),
    ("rehearsal_room_tick_overruns_total", "counter", None, "tick_overruns", "Ticks a room skipped (step late)."),
    (
        "rehearsal_room_tick_duration_seconds",
        "histogram",
        None,
        "tick_histogram",
        "Wall time of a room's ticks since it started (a histogram: buckets sum across rooms and processes).",
    ),
    (
        "rehearsal_room_physics_step_duration_seconds",
        "histogram",
        None,
        "physics_step_histogram",
        "Wall time of a room's physics steps since it started (a histogram: buckets sum across rooms and processes).",
    ),
)
MAX_ROOM_SERIES = 64  # rooms exported per process (the server runs at most 64); the rest are left out

# Hard cap on label values per family: status dicts come from the app, so a bug there (say, a
# per-client key) must not explode the series count. Extra values are summed into "other".
MAX_LABEL_VALUES = 32


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _labelled(values: Any, key: str) -> Iterator[tuple[str, float]]:
    if not isinstance(values, Mapping):
        return
    items = [(str(k), _number(v)) for k, v in values.items()]
    if key == "substeps" and items and not {k for k, _ in items} <= {"min", "max"}:
        nums = [v for _, v in items]  # a flat {room: substeps} mapping: bounded to min/max
        items = [("min", min(nums)), ("max", max(nums))]
    items.sort()
    if len(items) > MAX_LABEL_VALUES:
        kept, rest = items[: MAX_LABEL_VALUES - 1], items[MAX_LABEL_VALUES - 1 :]
        merged = dict(kept)
        merged["other"] = merged.get("other", 0.0) + sum(v for _, v in rest)
        items = sorted(merged.items())
    yield from items


def _histogram(name: str, doc: str, rooms: list[tuple[str, Mapping[str, Any]]], key: str) -> Metric:
    """A histogram family: per room, its cumulative buckets ``[[le, count], ...]`` (+Inf is the count), sum
    and count. A room without durations yet exports none."""
    family = HistogramMetricFamily(name, doc, labels=["session"])
    for session, stats in rooms:
        values = stats.get(key)
        if not isinstance(values, Mapping) or not isinstance(values.get("buckets"), list):
            continue
        buckets = []
        for entry in values["buckets"]:
            if isinstance(entry, list | tuple) and len(entry) == 2:
                buckets.append((floatToGoString(_number(entry[0])), _number(entry[1])))
        buckets.append(("+Inf", _number(values.get("count"))))
        family.add_metric([session], buckets, sum_value=_number(values.get("sum")))
    return family


def _room_families(room_stats: Any) -> list[Metric]:
    """The per-room families of ROOM_METRICS from ``{session: stats}`` (at most MAX_ROOM_SERIES rooms)."""
    rooms: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(room_stats, Mapping):
        rooms = [(str(k), v) for k, v in room_stats.items() if isinstance(v, Mapping)]
        rooms = sorted(rooms, key=lambda item: item[0])[:MAX_ROOM_SERIES]
    families: list[Metric] = []
    for name, kind, label, key, doc in ROOM_METRICS:
        if kind == "histogram":
            families.append(_histogram(name, doc, rooms, key))
            continue
        family_cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        if name == "rehearsal_room_info":
            family = family_cls(name, doc, labels=["session", "scenario", "state"])
            for session, stats in rooms:
                family.add_metric([session, str(stats.get("scenario", "")), str(stats.get("state", ""))], 1.0)
        elif label is None:
            family = family_cls(name, doc, labels=["session"])
            for session, stats in rooms:
                family.add_metric([session], _number(stats.get(key)))
        else:
            family = family_cls(name, doc, labels=["session", label])
            for session, stats in rooms:
                for label_value, number in _labelled(stats.get(key), key):
                    family.add_metric([session, label_value], number)
        families.append(family)
    return families


class StatusCollector(Collector):
    """Turns ``status()`` (shape in the module docstring) into metric families at scrape time."""

    def __init__(self, status: Callable[[], Mapping[str, Any]] | None) -> None:
        self.status = status
        self.errors = 0

    def _families(self, status: Mapping[str, Any]) -> list[Metric]:
        families: list[Metric] = []
        for name, kind, label, key, doc in STATUS_METRICS:
            family_cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            value = status.get(key)
            if label is None:
                families.append(family_cls(name, doc, value=_number(value)))
                continue
            family = family_cls(name, doc, labels=[label])
            for label_value, number in _labelled(value, key):
                family.add_metric([label_value], number)
            families.append(family)
        families.extend(_room_families(status.get("room_stats")))
        errors = CounterMetricFamily(
            "rehearsal_status_errors", "Scrapes where the app's status() raised.", value=self.errors
        )
        families.append(errors)
        return families

    def describe(self) -> Iterable[Metric]:
        return self._families({})  # names and types only; does not call status()

    def collect(self) -> Iterable[Metric]:
        status: Mapping[str, Any] = {}
        if self.status is not None:
            try:
                status = self.status() or {}
            except Exception:
                self.errors += 1
                log.exception("status() failed during a metrics scrape")
                status = {}
        return self._families(status)


class Histograms:
    """Per-event distributions. Call ``observe()`` directly on the attributes (no labels to bind)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tick = Histogram(
            "rehearsal_tick_duration_seconds",
            "Wall time of one room tick (physics, sync, send).",
            buckets=TICK_BUCKETS,
            registry=registry,
        )
        self.physics_step = Histogram(
            "rehearsal_physics_step_duration_seconds",
            "Wall time of the physics step within a tick.",
            buckets=PHYSICS_BUCKETS,
            registry=registry,
        )
        self.publish = Histogram(
            "rehearsal_publish_duration_seconds",
            "Wall time of publishing one room tick (events, snapshot encoding, sends) on the reactor thread.",
            buckets=TICK_BUCKETS,
            registry=registry,
        )
        self.rtt = Histogram(
            "rehearsal_rtt_seconds", "Client round-trip time samples.", buckets=RTT_BUCKETS, registry=registry
        )
        self.snapshot_bytes = Histogram(
            "rehearsal_snapshot_bytes", "Encoded snapshot size per client.", buckets=SNAPSHOT_BUCKETS, registry=registry
        )
        self.checkpoint = Histogram(
            "rehearsal_checkpoint_duration_seconds",
            "Wall time of writing one room checkpoint (serialize, sign, write, fsync) on the writer thread.",
            buckets=CHECKPOINT_BUCKETS,
            registry=registry,
        )


class OpsMetrics:
    """The server's registry: ``StatusCollector(status)`` plus ``Histograms``.

    >>> metrics = OpsMetrics(status=lambda: {"rooms": {"running": 1}})
    >>> metrics.histograms.tick.observe(0.004)
    >>> b"rehearsal_rooms" in metrics.exposition()
    True
    """

    def __init__(
        self, status: Callable[[], Mapping[str, Any]] | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.histograms = Histograms(self.registry)
        self.process = ProcessCollector(registry=self.registry)  # memory, CPU, file descriptors of this process
        self.status_collector = StatusCollector(status)
        self.registry.register(self.status_collector)

    def exposition(self) -> bytes:
        """The Prometheus text format (0.0.4) of everything in the registry."""
        return generate_latest(self.registry)


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a scrape can produce (families plus _total/_bucket/_sum/_count/_created)."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.update({family.name + "_total", family.name + "_created"})
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        elif family.type == "summary":
            names.update(family.name + s for s in ("_sum", "_count", "_created"))
        names.update(sample.name for sample in family.samples)
    return names
