"""The `rehearsal` command: serve, list and validate scenarios, mint invites and tokens.

    rehearsal serve [--config FILE] [--data-dir DIR] [--udp-port N] [--http-port N] [--drain-seconds S]
                    [--tls-cert PEM --tls-key PEM] ...
    rehearsal serve --processes N [--capacity R] [--redis URL] ...   N game servers and the join service on this
                    machine through one room directory (rehearsal.fleet.supervisor); the join API on --http-port
    rehearsal serve --redis URL --process-id ID [--capacity R]       one game server of a fleet (rehearsal.fleet)
    rehearsal join-service --redis URL [--http-port N] [--data-dir DIR]   the fleet's stateless join service
    rehearsal demo [--seconds N]              the server and a simulated team of bots, with a live status
    rehearsal scenarios [--scenario-dir DIR]  list the shipped scenarios (and DIR's)
    rehearsal scenarios check FILE ...        validate scenario files (schema, world, procedure, complications)
    rehearsal invite --scenario NAME|PATH     create a session on a running server; print its invites
    rehearsal token --session S --role R --name N   mint a connect token offline for an open session (base64)
    rehearsal results [--session S]           finished sessions from the results store (JSON)
    rehearsal replay RECORDING                re-simulate a recorded session and print its outcome (JSON)

Settings come from defaults < --config TOML < REHEARSAL_* environment < flags (rehearsal.settings). Each
command takes only the flags it uses (``rehearsal COMMAND --help`` shows them with their defaults); invite,
token and results need an existing data folder (a wrong --data-dir is an error, never a fresh one).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from netcode.transport.address import Address
from physics import Model, new_state
from rehearsal.complications import ComplicationError, Complications
from rehearsal.identity import Identity, IdentityError, clean_name, new_participant_id
from rehearsal.join_service import JoinService
from rehearsal.procedure import Procedure
from rehearsal.results_store import RESULTS_FILE, ResultsStore
from rehearsal.roles import Role
from rehearsal.scenario import (
    Scenario,
    ScenarioError,
    available_scenarios,
    build_world,
    load_scenario,
    packaged_scenarios,
)
from rehearsal.secrets_store import ADMIN_CREDENTIAL, TOKEN_KEY, SecretError, SecretSpec, server_secret
from rehearsal.session_store import SESSIONS_FILE, SessionStore
from rehearsal.settings import Settings, SettingsError, load_settings

# The flags that set a Settings field: (flag, field, type, help). Each command takes only those it uses.
_SETTING_FLAGS = {
    "data_dir": ("--data-dir", Path, "where secrets, sessions, results and recordings live"),
    "udp_host": ("--udp-host", str, "where the netcode (UDP) server listens: IPv4 or IPv6 literal"),
    "udp_port": ("--udp-port", int, "netcode (UDP) port; 0 picks a free one"),
    "public_host": ("--public-host", str, "the address clients are told to connect to (empty: --udp-host)"),
    "http_host": ("--http-host", str, "where the join API, admin API, /metrics and the web pages listen"),
    "http_port": ("--http-port", int, "HTTP port; 0 picks a free one"),
    "drain_seconds": ("--drain-seconds", float, "on SIGTERM, how long rooms may finish (s)"),
    "tls_cert": ("--tls-cert", str, "PEM certificate: serve HTTPS and WSS on the HTTP port (with --tls-key)"),
    "tls_key": ("--tls-key", str, "PEM private key of --tls-cert"),
    "webtransport_port": (
        "--webtransport-port",
        int,
        "UDP port for participants' WebTransport datagrams (HTTP/3, self-signed by hash); -1 off, 0 a free one",
    ),
    "scenario_dir": (
        "--scenario-dir",
        Path,
        "a folder of your own scenario files (*.toml), served beside the shipped ones",
    ),
    "max_clients": ("--max-clients", int, "netcode client slots"),
    "default_scenario": ("--default-scenario", str, "the scenario warm-up compiles the kernels with"),
    "empty_room_seconds": ("--empty-room-seconds", float, "a room with nobody in it ends after this long (s)"),
    "physics_threads": ("--physics-threads", int, "numba threads per room"),
    "observer_snapshot_hz": ("--observer-snapshot-hz", float, "observers' snapshot rate (0: every tick)"),
    "share_observer_stream": ("--share-observer-stream", bool, "browser observers share one encoded stream"),
    "record": ("--record", bool, "write each room's recording (data_dir/recordings) for replay and debrief"),
}
_DEFAULTS = Settings()
_SERVE = tuple(_SETTING_FLAGS)
_INVITE = ("data_dir", "http_host", "http_port", "tls_cert", "tls_key")
_TOKEN = ("data_dir", "udp_host", "udp_port", "public_host")
_RESULTS = ("data_dir",)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def _settings_flags(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """--config and the given settings' flags, each with its help and its default (from ``Settings``)."""
    p.add_argument(
        "--config", type=Path, help="settings file (TOML); precedence: defaults < file < REHEARSAL_* < flags"
    )
    for name in names:
        flag, kind, text = _SETTING_FLAGS[name]
        default = getattr(_DEFAULTS, name)
        shown = "none" if default in (None, "") else default
        p.add_argument(
            flag,
            dest=name,
            type=_bool if kind is bool else kind,
            metavar="BOOL" if kind is bool else None,
            help=f"{text} (default: {shown}; env REHEARSAL_{name.upper()})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rehearsal", description="Multi-user surgical rehearsal server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (join API over HTTP, rooms over netcode UDP)")
    _settings_flags(serve, _SERVE)
    fleet = serve.add_argument_group("fleet (rehearsal.fleet: a room directory on Redis)")
    fleet.add_argument(
        "--processes",
        type=int,
        help="run N game-server processes and the join service (supervisor; default: none, one process)",
    )
    fleet.add_argument(
        "--redis", help="the room directory's Redis, redis://HOST:PORT/DB (with --processes: default, one of its own)"
    )
    fleet.add_argument("--process-id", help="this game server's name in the directory (with --redis; default: none)")
    fleet.add_argument("--capacity", type=int, default=2, help="rooms per game-server process (default: %(default)s)")
    fleet.add_argument(
        "--fleet-namespace", default="rehearsal:fleet:", help="the directory's key prefix (default: %(default)s)"
    )
    fleet.add_argument(
        "--agones",
        action="store_true",
        help="follow the Agones lifecycle (default: only when AGONES_SDK_HTTP_PORT is set)",
    )
    joins = sub.add_parser(
        "join-service", help="the fleet's stateless join service (routes codes to the room's process)"
    )
    joins.add_argument("--redis", required=True, help="the room directory's Redis, redis://HOST:PORT/DB")
    joins.add_argument(
        "--data-dir",
        type=Path,
        default=_DEFAULTS.data_dir,
        help="where the fleet's secrets are, or the environment (default: %(default)s)",
    )
    joins.add_argument("--http-host", default="127.0.0.1", help="where it listens (default: %(default)s)")
    joins.add_argument(
        "--http-port", type=int, default=8080, help="its port; 0 picks a free one (default: %(default)s)"
    )
    joins.add_argument(
        "--fleet-namespace", default="rehearsal:fleet:", help="the directory's key prefix (default: %(default)s)"
    )
    demo = sub.add_parser("demo", help="run the server with a simulated team of bots and print their progress")
    demo.add_argument("--seconds", default="20", help="how long the team rehearses (default: %(default)s)")
    demo.add_argument("--keep-dir", type=Path, help="where the run's data is kept (default: rehearsal-demo/<time>)")
    scenarios = sub.add_parser(
        "scenarios",
        help="list the scenarios, or check scenario files",
        description="rehearsal scenarios: list the shipped scenarios (and --scenario-dir's). "
        "rehearsal scenarios check FILE...: validate files, build their worlds and try their complications.",
    )
    scenarios.add_argument("files", nargs="*", metavar="[check] FILE", help="scenario files to check (default: list)")
    scenarios.add_argument("--scenario-dir", type=Path, help="also list this folder's scenarios (default: none)")
    invite = sub.add_parser("invite", help="create a session on a running server and print its invites")
    _settings_flags(invite, _INVITE)
    invite.add_argument(
        "--scenario", required=True, help="a scenario's name, or the path of its file in the server's scenario folder"
    )
    invite.add_argument(
        "--uses", type=int, default=16, help="people who may join with each role's code, 1..1000 (default: %(default)s)"
    )
    token = sub.add_parser("token", help="mint a connect token for an open session from this data directory's key")
    _settings_flags(token, _TOKEN)
    token.add_argument("--session", required=True, help="an open session's id (from `rehearsal invite`)")
    token.add_argument("--role", required=True, choices=[r.value for r in Role], help="the participant's role")
    token.add_argument("--name", required=True, help="the participant's display name")
    results = sub.add_parser("results", help="print finished sessions (or one in full) from the results store")
    _settings_flags(results, _RESULTS)
    results.add_argument(
        "--session", help="one session in full: steps, complications, people, skill metrics (default: list them)"
    )
    results.add_argument("--limit", type=int, default=20, help="sessions listed, newest first (default: %(default)s)")
    replay = sub.add_parser("replay", help="re-simulate a recorded session (data_dir/recordings/*.rec)")
    replay.add_argument("recording", type=Path, help="a recording file")
    return parser


def _load(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name) for name in _SETTING_FLAGS if hasattr(args, name)}
    return load_settings(args.config, **flags)


class CliError(Exception):
    """A user error a command reports in one line (exit 2)."""


def _existing_data_dir(settings: Settings, needs: SecretSpec) -> Path:
    """The data folder of a server that has run, or CliError: a wrong --data-dir must not mint fresh secrets."""
    data = Path(settings.data_dir)
    if not data.is_dir():
        raise CliError(
            f"data folder {data} does not exist: give the server's --data-dir (or data_dir / REHEARSAL_DATA_DIR)"
        )
    if not os.environ.get(needs.env_var) and not (data / needs.name).is_file():
        raise CliError(f"{data} holds no {needs.name}: it is not a server's data folder (set --data-dir)")
    return data


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
    files = list(args.files)
    if files and str(files[0]) == "check":
        files = files[1:]
        if not files:
            raise CliError("scenarios check: give one or more scenario files")
    if not files:
        for name, path in sorted(available_scenarios(args.scenario_dir).items()):
            files.append(path if name not in packaged_scenarios() else Path(name))
    failed = 0
    for path in files:
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


def _scenario_arg(value: str) -> str:
    """A scenario name as is; an existing local file as its absolute path (the server may run elsewhere)."""
    path = Path(value).expanduser()
    if (value.endswith(".toml") or os.sep in value) and path.is_file():
        return str(path.resolve())
    return value


def _until(seconds: float) -> str:
    when = datetime.datetime.fromtimestamp(time.time() + seconds, datetime.UTC)
    return f"{when:%Y-%m-%d %H:%M} UTC (in {seconds / 3600:g} h)" if seconds >= 3600 else f"in {seconds:g} s"


def cmd_invite(args: argparse.Namespace) -> int:
    settings = _load(args)
    data = _existing_data_dir(settings, ADMIN_CREDENTIAL)
    credential = server_secret(data, ADMIN_CREDENTIAL).hex()
    host = settings.http_host if ":" not in settings.http_host else f"[{settings.http_host}]"
    scheme = "https" if settings.tls_cert else "http"
    base = (
        f"{scheme}://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '[::]', '[::1]') else host}:{settings.http_port}"
    )
    request = urllib.request.Request(
        f"{scheme}://{host}:{settings.http_port}/api/sessions",
        data=json.dumps({"scenario": _scenario_arg(args.scenario), "invite_uses": args.uses}).encode(),
        headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/json"},
        method="POST",
    )
    # HTTPS: trust the server's own certificate (the settings name it), so a self-signed one works too
    context = ssl.create_default_context(cafile=settings.tls_cert) if scheme == "https" else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail)["error"]
        hint = " (is --data-dir the server's? its admin credential differs)" if exc.code == 401 else ""
        print(f"rehearsal invite: the server refused: {exc.code} {detail}{hint}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"rehearsal invite: no server at {request.full_url}: {exc}", file=sys.stderr)
        return 1
    uses = body.get("invite_uses", args.uses)
    expires = body.get("invite_expires_in")
    print(f"session {body['session']} (scenario {body['scenario']})")
    print(
        f"each code admits {uses} {'person' if uses == 1 else 'people'}"
        + (f", until {_until(expires)}" if expires else "")
    )
    for role, code in body["invites"].items():
        how = f"{base}/?code={code}" if role in BROWSER_ROLES else f"headset: POST {base}/api/join"
        print(f"  {role:18} {code}   {how}")
    print(f'headsets send {{"invite": CODE, "name": ...}} to {base}/api/join and connect with the ticket\'s token')
    return 0


BROWSER_ROLES = ("mentor", "observer")  # the roles the watch page joins with (a link with the code)


def cmd_token(args: argparse.Namespace) -> int:
    settings = _load(args)
    data = _existing_data_dir(settings, TOKEN_KEY)
    sessions_file = data / SESSIONS_FILE
    store = SessionStore(sessions_file) if sessions_file.is_file() else None
    try:
        open_now = {row.session for row in store.open_sessions()} if store is not None else set()
    finally:
        if store is not None:
            store.close()
    if args.session not in open_now:
        known = ", ".join(sorted(open_now)) or "none"
        raise CliError(f"no open session {args.session!r} in {data} (open sessions: {known})")
    service = JoinService(
        server_secret(data, TOKEN_KEY), settings.protocol_id, [Address.parse(settings.public_address)]
    )
    identity = Identity(args.session, new_participant_id(), Role(args.role), clean_name(args.name))
    ticket = service.ticket_for(identity)
    print(base64.b64encode(ticket.token).decode())
    print(
        f"rehearsal token: {args.role} {identity.name!r} in {args.session}; connect to {settings.public_address} "
        f"within {ticket.expires_in} s (the token expires then)",
        file=sys.stderr,
    )
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    data = Path(_load(args).data_dir)
    if not data.is_dir():
        raise CliError(f"data folder {data} does not exist: give the server's --data-dir")
    path = data / RESULTS_FILE
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

    settings = _load(args)
    if args.processes is not None:
        from rehearsal.fleet.supervisor import FleetPlan, Supervisor

        plan = FleetPlan(
            data_dir=settings.data_dir,
            processes=args.processes,
            capacity=args.capacity,
            http_host=settings.http_host,
            http_port=settings.http_port,
            udp_host=settings.udp_host,
            udp_port=settings.udp_port if args.udp_port is not None else 0,
            redis_url=args.redis or "",
            namespace=args.fleet_namespace,
            drain_seconds=settings.drain_seconds,
            extra=passed_on_flags(args),
        )
        return Supervisor(plan).run()
    if args.redis:
        from rehearsal.fleet.runners import serve_member

        if not args.process_id:
            raise CliError("--redis needs --process-id (this game server's name in the directory)")
        return serve_member(
            settings,
            args.redis,
            args.process_id,
            capacity=args.capacity,
            namespace=args.fleet_namespace,
            agones=args.agones,
        )
    return serve(settings)


_FLEET_OWN = ("data_dir", "udp_host", "udp_port", "http_host", "http_port", "drain_seconds")


def passed_on_flags(args: argparse.Namespace) -> list[str]:
    """The settings flags given to ``serve --processes`` that every game server gets as well (its ports, data
    folder and drain are the supervisor's to set)."""
    out = []
    if args.config is not None:
        out += ["--config", str(args.config)]
    for name, (flag, _, _) in _SETTING_FLAGS.items():
        value = getattr(args, name, None)
        if value is not None and name not in _FLEET_OWN:
            if name == "webtransport_port" and value > 0:
                value = 0  # one port cannot serve every process: each takes a free one (its pages are told it)
            out += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return out


def cmd_join_service(args: argparse.Namespace) -> int:
    from rehearsal.fleet.runners import serve_join_service

    return serve_join_service(args.data_dir, args.redis, args.http_host, args.http_port, namespace=args.fleet_namespace)


def cmd_demo(args: argparse.Namespace) -> int:
    from rehearsal.demo import main as demo_main

    return demo_main(["--seconds", str(args.seconds)] + (["--keep-dir", str(args.keep_dir)] if args.keep_dir else []))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "serve": cmd_serve,
        "join-service": cmd_join_service,
        "demo": cmd_demo,
        "scenarios": cmd_scenarios,
        "invite": cmd_invite,
        "token": cmd_token,
        "results": cmd_results,
        "replay": cmd_replay,
    }
    try:
        return handlers[args.command](args)
    except (CliError, SettingsError, SecretError, IdentityError, ValueError, OSError) as exc:
        print(f"rehearsal {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
