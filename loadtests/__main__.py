"""``python -m loadtests <run> --help``: capacity, impaired, soak, faults, crash (see loadtests/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtests.report import dumps


def _runs() -> dict:
    from loadtests.capacity import run_capacity
    from loadtests.crash import run_crash
    from loadtests.faults import run_faults
    from loadtests.impaired import run_impaired
    from loadtests.soak import run_soak

    return {
        "capacity": run_capacity,
        "impaired": run_impaired,
        "soak": run_soak,
        "faults": run_faults,
        "crash": run_crash,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests", description="load and fault runs (loopback only)")
    sub = parser.add_subparsers(dest="run", required=True)
    out_help = "folder for the run folders (default ./loadtest-runs)"

    p = sub.add_parser("capacity", help="ramp rooms, then clients, until tick p99 passes 16.7 ms; report the knee")
    p.add_argument("--scenario", default="block_5k", help="packaged or loadtests scenario (default block_5k, 5k tets)")
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
        "--observer-snapshot-hz",
        type=float,
        default=None,
        help="the servers' observer_snapshot_hz (e.g. 30; 0: observers get every tick); default: the server's own",
    )
    p.add_argument("--out", type=Path, default=None, help=out_help)

    p = sub.add_parser("impaired", help="a team with one client under loss, a burst, 150+/-30 ms RTT, reordering")
    p.add_argument("--seconds", type=float, default=20.0, help="how long the team operates (default 20)")
    p.add_argument("--scenario", default="basic_skills")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help=out_help)

    p = sub.add_parser("soak", help="moderate load for a long time; server RSS and fds must stay flat")
    p.add_argument("--seconds", type=float, default=3600.0, help="how long (default 3600)")
    p.add_argument("--rooms", type=int, default=2, help="rooms (default 2)")
    p.add_argument("--scenario", default="block_5k")
    p.add_argument("--out", type=Path, default=None, help=out_help)

    p = sub.add_parser("faults", help="SIGKILLed client timed out and released; garbage flood; memory flat")
    p.add_argument("--flood-seconds", type=float, default=20.0, help="length of the garbage flood (default 20)")
    p.add_argument("--scenario", default="block_5k")
    p.add_argument("--out", type=Path, default=None, help=out_help)

    p = sub.add_parser("crash", help="SIGKILL the server mid-session; the team is back in the same session in 10 s")
    p.add_argument("--scenario", default="basic_skills")
    p.add_argument("--out", type=Path, default=None, help=out_help)

    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in vars(args).items() if k not in ("run",)}
    runner = _runs()[args.run]
    try:
        report = runner(**kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"{args.run} failed: {exc}", file=sys.stderr)
        return 1
    print(dumps({k: v for k, v in report.items() if k != "bots"}))
    return 0 if report.get("passed", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
