"""The skeleton every load run plugs into: its folder, servers, sampler, swarm workers, report and teardown.

A run (``capacity``, ``faults``, ``impaired``, ``soak``) is a function ``run_x(out, *, scenario, ..., say)``
whose body works inside ``with load_run("x", out, say, ...) as run:``. The skeleton gives it

* ``run.folder`` (``<out>/<name>-<UTC time>/``) and ``run.report`` (``run``, ``folder`` and the fields given);
* ``run.server(tag, **LoadServer options)``: an instrumented server started in ``folder/tag`` and waited for,
  one of ``run.servers`` (a ``ServerGroup``: several are measured as one);
* ``run.sample(every)``: the ``Sampler`` of those servers, with the swarm's processes (and ``run.pids``, e.g.
  a flooder) as the load generators' CPU;
* ``run.launch(spec)``: a swarm worker in ``folder/workers``; ``run.results()`` waits for every worker and
  returns the bots on the run's clock (``origin``, set by ``run.start_clock()``);
* ``run.plots(...)``: the PNGs and the note when matplotlib is missing;

and, however the body ends, tears it all down in one place (``on_close`` callbacks first, e.g. a relay or
stop files; then the sampler, the workers, the servers, whose exit codes go into ``server_exit``). When the
body returns, the report is written to ``folder/<name>.json``.

On the command line (``python -m loadtests <run>``, ``loadtests/__main__.py``) every run has ``--scenario``
(with its default) and ``--out``, and adds its own flags.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import plots as plotting
from loadtests.report import bots_of, run_folder, write_json
from loadtests.sampler import Sampler
from loadtests.server import LoadServer, ServerGroup
from loadtests.swarm import Worker, launch


@dataclass
class Run:
    """One load run in progress (see the module doc)."""

    name: str
    folder: Path
    report: dict[str, Any]
    say: Callable[[str], None] = print
    servers: ServerGroup = field(default_factory=ServerGroup)
    workers: list[Worker] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # other load generators of the run (their CPU is the swarm's)
    on_close: list[Callable[[], None]] = field(default_factory=list)
    sampler: Sampler | None = None
    origin: float = field(default_factory=time.monotonic)

    def server(self, tag: str = "server", **options: Any) -> LoadServer:
        """An instrumented server in ``folder/tag`` (``LoadServer`` options), listening when this returns."""
        server = self.servers.add(LoadServer(self.folder / tag, **options))
        server.wait_listening()
        return server

    def sample(self, every: float = 1.0, metrics_every: float | None = None) -> Sampler:
        """Sample the run's servers (and its load generators' CPU) every ``every`` seconds until the end, their
        ``/metrics`` every ``metrics_every`` (default: each sample)."""
        self.sampler = Sampler(self.servers, every=every, swarm=self.generator_pids, metrics_every=metrics_every)
        self.sampler.start()
        return self.sampler

    def generator_pids(self) -> list[int]:
        return [w.pid for w in self.workers] + self.pids

    def start_clock(self) -> float:
        """The run's time origin (bot reports, windows and plots are on it): now."""
        self.origin = time.monotonic()
        return self.origin

    def launch(self, spec: dict[str, Any]) -> Worker:
        """A swarm worker running ``spec`` (``loadtests.swarm``)."""
        worker = launch(spec, self.folder / "workers")
        self.workers.append(worker)
        return worker

    def results(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(each worker's report, every bot of them on the run's clock), waiting (bounded) for the workers."""
        results = [w.result() for w in self.workers]
        return results, bots_of(results, self.origin)

    def plots(self, *paths: Path | None) -> None:
        """Put the plots drawn (None: not drawn) and the matplotlib note into the report."""
        self.report["plots"] = list(paths)
        self.report["plots_note"] = plotting.available()

    def close(self) -> None:
        """Tear everything down (idempotent): ``on_close``, the sampler, the workers, the servers."""
        for callback in self.on_close:
            with contextlib.suppress(OSError):
                callback()
        self.on_close.clear()
        if self.sampler is not None:
            self.sampler.stop()
        for worker in self.workers:
            worker.kill()
        exits = [server.stop() for server in self.servers.servers]
        self.report["server_exit"] = exits[0] if len(exits) == 1 else exits


@contextlib.contextmanager
def load_run(name: str, out: Path | None, say: Callable[[str], None] = print, **fields: Any) -> Iterator[Run]:
    """A ``Run`` in ``out/<name>-<time>/`` with ``fields`` in its report; torn down however the body ends,
    its report written to ``<name>.json`` when the body returns."""
    folder = run_folder(out, name)
    run = Run(name, folder, {"run": name, "folder": folder, **fields}, say)
    try:
        yield run
    finally:
        run.close()
    write_json(folder / f"{name}.json", run.report)
