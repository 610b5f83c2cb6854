"""The `rehearsal` command: serve, list and validate scenarios, mint invites and tokens.

    rehearsal serve [--config FILE] [--data-dir DIR] [--udp-port N] [--http-port N] [--drain-seconds S] ...
    rehearsal demo [--seconds N]              the server and a simulated team of bots, with a live status
    rehearsal scenarios [FILE ...]            list the shipped scenarios, or validate files
    rehearsal invite --scenario NAME          create a session on a running server; print its invites
    rehearsal token --session S --role R --name N   mint a connect token offline (base64)

Settings come from defaults < --config TOML < REHEARSAL_* environment < flags (rehearsal.settings).
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from netcode.address import Address
from rehearsal.identity import Identity, IdentityError, clean_name
from rehearsal.join_service import JoinService
from rehearsal.roles import Role
from rehearsal.scenario import ScenarioError, build_world, load_scenario, packaged_scenarios
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
    token = sub.add_parser("token", help="mint a connect token from this data directory's key")
    _settings_flags(token)
    token.add_argument("--session", required=True)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--name", required=True)
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
    )


def cmd_scenarios(args: argparse.Namespace) -> int:
    targets = args.files or list(packaged_scenarios().values())
    failed = 0
    for path in targets:
        try:
            scenario = load_scenario(path)
            model = build_world(scenario)
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
        data=json.dumps({"scenario": args.scenario}).encode(),
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
    }
    try:
        return handlers[args.command](args)
    except (SettingsError, SecretError, IdentityError, ValueError) as exc:
        print(f"rehearsal {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
