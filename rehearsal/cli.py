"""The `rehearsal` command: serve, list and validate scenarios, mint invites and tokens.

    rehearsal serve [--config FILE] [--data-dir DIR] [--udp-port N] [--http-port N] [--drain-seconds S]
                    [--tls-cert PEM --tls-key PEM] ...
    rehearsal demo [--seconds N]              the server and a simulated team of bots, with a live status
    rehearsal scenarios [FILE ...]            list the shipped scenarios, or validate files
    rehearsal invite --scenario NAME          create a session on a running server; print its invites
    rehearsal token --session S --role R --name N   mint a connect token offline (base64)
    rehearsal results [--session S]           finished sessions from the results store (JSON)
    rehearsal replay RECORDING                re-simulate a recorded session and print its outcome (JSON)

Settings come from defaults < --config TOML < REHEARSAL_* environment < flags (rehearsal.settings).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from netcode.transport.address import Address
from physics import Model, new_state
from rehearsal.complications import ComplicationError, Complications
from rehearsal.identity import Identity, IdentityError, clean_name
from rehearsal.join_service import JoinService
from rehearsal.procedure import Procedure
from rehearsal.results_store import RESULTS_FILE, ResultsStore
from rehearsal.roles import Role
from rehearsal.scenario import Scenario, ScenarioError, build_world, load_scenario, packaged_scenarios
from rehearsal.secrets_store import ADMIN_CREDENTIAL, TOKEN_KEY, SecretError, server_secret
from rehearsal.settings import Settings, SettingsError, load_settings


def _settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="settings file (TOML)")
    p.add_argument("--data-dir", type=Path, help="where secrets and records live")
    p.add_argument("--udp-host")
    p.add_argument("--udp-port", type=int)
    p.add_argument("--public-host", help="the address clients are told to connect to")
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--drain-seconds", type=float, help="on SIGTERM, how long rooms may finish (default 30)")
    p.add_argument("--tls-cert", help="PEM certificate: serve HTTPS and WSS on the HTTP port (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--scenario-dir", type=Path, help="extra scenario files (*.toml) offered beside the shipped ones")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rehearsal", description="Multi-user surgical rehearsal server.")
    sub = parser.add_subparsers(dest="command", required=True)
    _settings_flags(sub.add_parser("serve", help="run the server (join API over HTTP, rooms over netcode UDP)"))
    demo = sub.add_parser("demo", help="run the server with a simulated team of bots and print their progress")
    demo.add_argument("--seconds", default="20", help="how long the team rehearses (default 20)")
    scenarios = sub.add_parser("scenarios", help="list the shipped scenarios or validate scenario files")
    scenarios.add_argument("files", nargs="*", type=Path)
    invite = sub.add_parser("invite", help="create a session on a running server and print its invites")
    _settings_flags(invite)
    invite.add_argument("--scenario", required=True)
    invite.add_argument("--uses", type=int, default=16, help="people who may join with each role's code (1..1000)")
    token = sub.add_parser("token", help="mint a connect token from this data directory's key")
    _settings_flags(token)
    token.add_argument("--session", required=True)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--name", required=True)
    results = sub.add_parser("results", help="print finished sessions (or one in full) from the results store")
    _settings_flags(results)
    results.add_argument("--session", help="one session in full: steps, complications, people, skill metrics")
    results.add_argument("--limit", type=int, default=20)
    replay = sub.add_parser("replay", help="re-simulate a recorded session (data_dir/recordings/*.rec)")
    replay.add_argument("recording", type=Path)
    return parser


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        data_dir=args.data_dir,
        udp_host=args.udp_host,
        udp_port=args.udp_port,
        public_host=args.public_host,
        http_host=args.http_host,
        http_port=args.http_port,
        drain_seconds=args.drain_seconds,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        scenario_dir=args.scenario_dir,
    )


def check_world(scenario: Scenario, model: Model) -> None:
    """Build the scenario's procedure and inject each complication into a copy of its world, so that a
    box that misses the anatomy is found now rather than in front of a team (raises ScenarioError)."""
    Procedure(scenario, model)
    for complication in scenario.complications:
        try:
            Complications(scenario).inject(complication.id, copy.deepcopy(model), new_state(model))
        except ComplicationError as exc:
            raise ScenarioError(f"{scenario.source.name}: complication {complication.id!r}: {exc}") from None


def cmd_scenarios(args: argparse.Namespace) -> int:
    targets = args.files or list(packaged_scenarios().values())
    failed = 0
    for path in targets:
        try:
            scenario = load_scenario(path)
            model = build_world(scenario)
            check_world(scenario, model)
        except (ScenarioError, ValueError, OSError) as exc:
            print(f"INVALID  {path}: {exc}")
            failed += 1
            continue
        print(
            f"ok       {scenario.name}: {scenario.title} ({model.n_tets} tets, {len(scenario.steps)} steps, "
            f"{len(scenario.complications)} complications)"
        )
    return 1 if failed else 0


def cmd_invite(args: argparse.Namespace) -> int:
    settings = _load(args)
    credential = server_secret(settings.data_dir, ADMIN_CREDENTIAL).hex()
    host = settings.http_host if ":" not in settings.http_host else f"[{settings.http_host}]"
    request = urllib.request.Request(
        f"http://{host}:{settings.http_port}/api/sessions",
        data=json.dumps({"scenario": args.scenario, "invite_uses": args.uses}).encode(),
        headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(
            f"rehearsal invite: the server refused: {exc.code} {exc.read().decode(errors='replace')}", file=sys.stderr
        )
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"rehearsal invite: no server at {request.full_url}: {exc}", file=sys.stderr)
        return 1
    print(f"session {body['session']} ({body['scenario']})")
    for role, code in body["invites"].items():
        print(f"  {role:18} {code}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = _load(args)
    service = JoinService(
        server_secret(settings.data_dir, TOKEN_KEY), settings.protocol_id, [Address.parse(settings.public_address)]
    )
    identity = Identity(args.session, secrets.randbits(63) or 1, Role(args.role), clean_name(args.name))
    print(base64.b64encode(service.ticket_for(identity).token).decode())
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    path = _load(args).data_dir / RESULTS_FILE
    if not path.is_file():
        print(f"rehearsal results: no results store at {path} (no session has ended there yet)", file=sys.stderr)
        return 1
    store = ResultsStore(path)
    try:
        if args.session is None:
            print(json.dumps(store.sessions(args.limit), indent=1))
            return 0
        found = store.session(args.session)
    finally:
        store.close()
    if found is None:
        print(f"rehearsal results: no session {args.session!r} in {path}", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=1))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from rehearsal.replay import replay

    room = replay(args.recording)
    outcome = {
        "session": room.session,
        "scenario": room.scenario.name,
        "frames": room.frame,
        "simulated_seconds": round(room.elapsed, 3),
        "live_tets": room.model.n_live_tets,
        **room.progress(),
        "skills": room.skills.report()["participants"],
    }
    print(json.dumps(outcome, indent=1))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rehearsal.server import serve  # the twisted reactor is imported only to serve

    return serve(_load(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from rehearsal.demo import main as demo_main

    return demo_main(["--seconds", str(args.seconds)])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "serve": cmd_serve,
        "demo": cmd_demo,
        "scenarios": cmd_scenarios,
        "invite": cmd_invite,
        "token": cmd_token,
        "results": cmd_results,
        "replay": cmd_replay,
    }
    try:
        return handlers[args.command](args)
    except (SettingsError, SecretError, IdentityError, ValueError, OSError) as exc:
        print(f"rehearsal {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
