"""``python -m loadtests <run> --help``: capacity, impaired, soak, faults, crash, fleet (see loadtests/README.md).

Each run is a ``RunCommand``: the flags every run has (``--scenario`` with the run's default, ``--out``), its
own flags, and its function (``loadtests.run`` is the skeleton the functions share), imported only when the
run is chosen so that ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.report import dumps


@dataclass(frozen=True)
class RunCommand:
    """A run on the command line: ``python -m loadtests <name> [--scenario S] [--out DIR] <its flags>``.

    ``function`` is ``"module:function"``, imported only when the run is chosen (``--help`` stays quick)."""

    name: str
    help: str
    function: str
    scenario: str  # the default scenario
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None

    def add_to(self, sub: Any) -> None:
        """This run's subcommand: the common flags, then the run's own."""
        parser = sub.add_parser(self.name, help=self.help)
        parser.add_argument(
            "--scenario", default=self.scenario, help=f"packaged or loadtests scenario (default {self.scenario})"
        )
        parser.add_argument(
            "--out", type=Path, default=None, help="folder for the run folders (default ./loadtest-runs)"
        )
        self.add_arguments(parser)

    def resolve(self) -> Callable[..., dict[str, Any]]:
        module, function = self.function.split(":")
        return getattr(importlib.import_module(module), function)


def _progress(line: str) -> None:
    """A run's progress goes to stderr, so that stdout is its JSON report alone."""
    print(line, file=sys.stderr, flush=True)


def main(commands: list[RunCommand] | None = None, argv: list[str] | None = None) -> int:
    """Parse the command line, run the chosen run, print its report (without the per-bot list) as JSON;
    the exit code is 0 when its checks passed (1 when it failed or could not run)."""
    commands = COMMANDS if commands is None else commands
    parser = argparse.ArgumentParser(prog="python -m loadtests", description="load and fault runs (loopback only)")
    sub = parser.add_subparsers(dest="run", required=True)
    for command in commands:
        command.add_to(sub)
    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in vars(args).items() if k != "run"}
    command = next(c for c in commands if c.name == args.run)
    try:
        report = command.resolve()(**kwargs, say=_progress)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"{args.run} failed: {exc}", file=sys.stderr)
        return 1
    print(dumps({k: v for k, v in report.items() if k != "bots"}))
    return 0 if report.get("passed", True) else 1


def _capacity(p: argparse.ArgumentParser) -> None:
    p.add_argument("--participants", type=int, default=4, help="participants per room (default 4)")
    p.add_argument("--observers", type=int, default=4, help="observers per room (default 4)")
    p.add_argument("--max-rooms", type=int, default=8, help="stop the room ramp here (default 8)")
    p.add_argument("--phase-seconds", type=float, default=30.0, help="length of each phase (default 30)")
    p.add_argument("--observer-step", type=int, default=4, help="observers added per room per client phase")
    p.add_argument("--max-observer-steps", type=int, default=4, help="client phases at most (default 4)")
    p.add_argument(
        "--physics-threads",
        type=int,
        default=0,
        help="experiment: numba threads per room step (1 = one thread per room); default: the server's own",
    )
    p.add_argument(
        "--process-per-room",
        action="store_true",
        help="one server process per room (DESIGN's scale-out), measured together; default: all rooms in one",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="spread the rooms over N server processes in turn, measured together (default 1: all in one)",
    )
    p.add_argument(
        "--observer-snapshot-hz",
        type=float,
        default=None,
        help="the servers' observer_snapshot_hz (e.g. 30; 0: observers get every tick); default: the server's own",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the first server's reactor thread in the room phase at --required-rooms (reactor_profile)",
    )
    p.add_argument("--required-rooms", type=int, default=4, help="the load the goal names, in rooms (default 4)")


def _impaired(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=20.0, help="how long the team operates (default 20)")
    p.add_argument("--seed", type=int, default=1)


def _soak(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=3600.0, help="how long (default 3600)")
    p.add_argument("--rooms", type=int, default=2, help="rooms (default 2)")


def _faults(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flood-seconds", type=float, default=20.0, help="length of the garbage flood (default 20)")


def _fleet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--processes", type=int, default=3, help="game-server processes (default 3)")
    p.add_argument("--capacity", type=int, default=3, help="rooms per process (default 3)")
    p.add_argument("--sessions", type=int, default=6, help="sessions placed (default 6)")
    p.add_argument("--joins-per-session", type=int, default=4, help="joins through the join service (default 4)")


def _attack(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attack-seconds", type=float, default=8.0, help="length of each attack (default 8)")
    p.add_argument("--only", default=None, help="comma-separated attacks to run (default: all)")


COMMANDS = [
    RunCommand(
        "capacity",
        "ramp rooms, then clients, until tick p99 passes 16.7 ms; report the knee",
        "loadtests.capacity:run_capacity",
        "block_5k",
        _capacity,
    ),
    RunCommand(
        "impaired",
        "a team with one client under loss, a burst, 150+/-30 ms RTT, reordering",
        "loadtests.impaired:run_impaired",
        "basic_skills",
        _impaired,
    ),
    RunCommand(
        "soak",
        "moderate load for a long time; server RSS and fds must stay flat",
        "loadtests.soak:run_soak",
        "block_5k",
        _soak,
    ),
    RunCommand(
        "faults",
        "SIGKILLed client timed out and released; garbage flood; memory flat",
        "loadtests.faults:run_faults",
        "block_5k",
        _faults,
    ),
    RunCommand(
        "crash",
        "SIGKILL the server mid-session; the team is back in the same session within 10 s",
        "loadtests.crash:run_crash",
        "basic_skills",
    ),
    RunCommand(
        "fleet",
        "rehearsal serve --processes N: placement rate, join p99 via the directory, SIGKILL failover <= 5 s",
        "loadtests.fleet:run_fleet",
        "basic_skills",
        _fleet,
    ),
    RunCommand(
        "attack",
        "issue 19's attacks one at a time; a witness in another room keeps 55 snapshots/s, gaps <= 100 ms",
        "loadtests.attack:run_attack",
        "basic_skills",
        _attack,
    ),
]


if __name__ == "__main__":
    raise SystemExit(main(COMMANDS))
