"""The `rehearsal` command's offline subcommands."""

import base64
import json
import stat
from pathlib import Path

import pytest

from netcode.transport.connect_token import ConnectToken, decrypt_private_token
from rehearsal.cli import build_parser, main
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.secrets_store import ADMIN_CREDENTIAL, TOKEN_KEY, server_secret
from rehearsal.session_store import SESSIONS_FILE, SessionStore
from rehearsal.settings import PROTOCOL_ID


def test_scenarios_lists_and_validates(tmp_path, capsys):
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    assert "basic_skills" in out and "cholecystectomy" in out and "INVALID" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\ntitle = 'x'\n")
    assert main(["scenarios", str(bad)]) == 1
    assert "INVALID" in capsys.readouterr().out
    shipped = (Path(__file__).parents[2] / "rehearsal" / "scenarios" / "basic_skills.toml").read_text()
    for i, (old, new) in enumerate(
        [
            (
                "box = { lo = [-0.03, 0.015, -0.02], hi = [0.03, 0.021, 0.02] }",
                "box = { lo = [1.0, 0.015, -0.02], hi = [1.1, 0.021, 0.02] }",
            ),
            ("region = 0\nfactor = 2.0", "region = 5\nfactor = 2.0"),  # the stiffer region does not exist
        ]
    ):
        broken = tmp_path / f"broken{i}.toml"
        broken.write_text(shipped.replace(old, new, 1))
        assert main(["scenarios", str(broken)]) == 1
        out = capsys.readouterr().out
        assert "INVALID" in out and ("holds no tissue" in out or "no live tissue of region 5" in out), out


def _server_data(tmp_path, *sessions):
    """A data folder as a server leaves it: its secrets, and these sessions open in its session store."""
    data = tmp_path / "data"
    server_secret(data, TOKEN_KEY)
    server_secret(data, ADMIN_CREDENTIAL)
    store = SessionStore(data / SESSIONS_FILE)
    for session in sessions:
        store.session_opened(session, "basic_skills", 1.0)
    store.close()
    return data


def test_token_is_minted_from_the_data_dir_key(tmp_path, capsys):
    data = _server_data(tmp_path, "s-9")
    args = ["token", "--data-dir", str(data), "--session", "s-9", "--role", "observer", "--name", "Student"]
    assert main([*args, "--udp-port", "41234"]) == 0
    captured = capsys.readouterr()
    token = ConnectToken.decode(base64.b64decode(captured.out.strip()))
    assert "connect to 127.0.0.1:41234 within 30 s (the token expires then)" in captured.err
    assert str(token.server_addresses[0]) == "127.0.0.1:41234"
    key_file = data / "token_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    private = decrypt_private_token(token.private_data, PROTOCOL_ID, token.expire_timestamp, token.nonce, key)
    who = Identity.from_user_data(private.user_data)
    assert (who.session, who.role, who.name) == ("s-9", Role.OBSERVER, "Student")


def test_token_refuses_an_unknown_session(tmp_path, capsys):
    data = _server_data(tmp_path, "s-1")
    args = ["token", "--data-dir", str(data), "--session", "s-2", "--role", "observer", "--name", "Student"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"rehearsal token: no open session 's-2' in {data} (open sessions: s-1)" in captured.err


@pytest.mark.parametrize("command", ["invite", "token", "results"])
def test_a_data_folder_that_does_not_exist_is_an_error_not_a_new_one(tmp_path, capsys, command):
    missing = tmp_path / "typo"
    extra = {
        "invite": ["--scenario", "basic_skills", "--http-port", "1"],
        "token": ["--session", "s", "--role", "observer", "--name", "n"],
        "results": [],
    }[command]
    assert main([command, "--data-dir", str(missing), *extra]) == 2
    err = capsys.readouterr().err
    assert f"rehearsal {command}: data folder {missing} does not exist: give the server's --data-dir" in err
    assert not missing.exists()


def test_a_folder_without_the_servers_secrets_is_refused(tmp_path, capsys):
    assert main(["invite", "--data-dir", str(tmp_path), "--scenario", "basic_skills", "--http-port", "1"]) == 2
    assert f"{tmp_path} holds no admin_credential: it is not a server's data folder" in capsys.readouterr().err
    assert not (tmp_path / "admin_credential").exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["invite", "--scenario", "x", "--udp-port", "1"], "--udp-port"),
        (["token", "--session", "s", "--role", "observer", "--name", "n", "--http-port", "1"], "--http-port"),
        (["results", "--tls-cert", "c.pem"], "--tls-cert"),
        (["results", "--drain-seconds", "3"], "--drain-seconds"),
    ],
)
def test_flags_that_mean_nothing_to_a_command_are_refused(capsys, argv, flag):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_every_flag_has_help_with_its_default():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps its subparsers here
    for name, sub in commands.items():
        for action in sub._actions:
            if action.option_strings and action.dest not in ("help", "config"):
                assert action.help, (name, action.option_strings)
                assert action.required or "default" in action.help, (name, action.option_strings)
    serve = {a.option_strings[0]: a.help for a in commands["serve"]._actions if a.option_strings}
    assert serve["--http-host"].endswith("(default: 127.0.0.1; env REHEARSAL_HTTP_HOST)")
    assert serve["--http-port"].endswith("(default: 8080; env REHEARSAL_HTTP_PORT)")


def test_bad_arguments_get_clear_errors(tmp_path, capsys):
    data = _server_data(tmp_path, "s")
    assert main(["token", "--data-dir", str(data), "--session", "s", "--role", "observer", "--name", " "]) == 2
    assert "display name" in capsys.readouterr().err


def test_invite_without_a_server_says_so(tmp_path, capsys):
    data = _server_data(tmp_path)
    assert main(["invite", "--data-dir", str(data), "--http-port", "1", "--scenario", "basic_skills"]) == 1
    assert "rehearsal invite: no server at http://127.0.0.1:1/api/sessions" in capsys.readouterr().err


def test_scenarios_check_names_the_file_line_and_key(tmp_path, capsys):
    shipped = (Path(__file__).parents[2] / "rehearsal" / "scenarios" / "basic_skills.toml").read_text()
    typo = tmp_path / "typo.toml"
    typo.write_text(shipped.replace("substeps = 20", "substep = 15"))
    assert main(["scenarios", "check", str(typo)]) == 1
    line = shipped.splitlines().index("substeps = 20") + 1
    out = capsys.readouterr().out
    assert f"typo.toml:{line}: physics.substep: unknown key 'substep' (did you mean 'substeps'?)" in out
    assert main(["scenarios", "check"]) == 2
    assert "scenarios check: give one or more scenario files" in capsys.readouterr().err


def test_scenarios_lists_the_scenario_folder_too(tmp_path, capsys):
    shipped = (Path(__file__).parents[2] / "rehearsal" / "scenarios" / "basic_skills.toml").read_text()
    (tmp_path / "my_flap.toml").write_text(shipped)
    assert main(["scenarios", "--scenario-dir", str(tmp_path)]) == 0
    assert "ok       my_flap:" in capsys.readouterr().out


def test_results_and_replay_show_what_a_session_left_behind(tmp_path, capsys):
    from rehearsal.identity import Identity
    from rehearsal.recording import Recorder
    from rehearsal.results_store import RESULTS_FILE, ResultsStore
    from rehearsal.roles import Role
    from rehearsal.room import Room
    from rehearsal.scenario import load_scenario

    data = _server_data(tmp_path)
    assert main(["results", "--data-dir", str(data)]) == 1
    assert "no results store" in capsys.readouterr().err
    room = Room("s-cli", load_scenario("basic_skills"))
    room.recorder = Recorder(data / "recordings" / "s-cli.rec", room.session, room.scenario)
    room.join(Identity(room.session, 1, Role.MENTOR, "m"))
    room.start()
    for _ in range(3):
        room.advance(1 / 60)
    room.end()
    room.recorder.close("ended")
    store = ResultsStore(data / RESULTS_FILE)
    store.save(room.result(1.0, 2.0))
    store.close()
    assert main(["results", "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["session"] == "s-cli"
    assert main(["results", "--data-dir", str(data), "--session", "s-cli"]) == 0
    assert json.loads(capsys.readouterr().out)["participants"][0]["role"] == "mentor"
    assert main(["results", "--data-dir", str(data), "--session", "nope"]) == 1
    assert main(["replay", str(data / "recordings" / "s-cli.rec")]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["frames"] == 3 and outcome["current_step"] == "retract"
    assert main(["replay", str(tmp_path / "missing.rec")]) == 2
    assert "missing.rec" in capsys.readouterr().err


CLI_SERVE = "import sys\nfrom rehearsal.cli import main\nsys.exit(main(sys.argv[1:]))\n"


@pytest.mark.slow
def test_invite_serves_your_scenario_by_name_and_by_path_end_to_end(tmp_path, capsys):
    """`rehearsal serve --scenario-dir DIR` and `rehearsal invite --scenario my_flap` (or DIR/my_flap.toml)."""
    from rehearsal.bots import ServerProcess

    folder = tmp_path / "mine"
    folder.mkdir()
    shipped = (Path(__file__).parents[2] / "rehearsal" / "scenarios" / "basic_skills.toml").read_text()
    (folder / "my_flap.toml").write_text(shipped.replace("Basic skills: tissue block", "My flap"))
    data = tmp_path / "data"
    serve = ["serve", "--data-dir", str(data), "--udp-port", "0", "--http-port", "0", "--scenario-dir", str(folder)]
    server = ServerProcess(data, script=CLI_SERVE, script_args=serve)
    try:
        _, http_port = server.wait_listening()
        invite = ["invite", "--data-dir", str(data), "--http-port", str(http_port)]
        for scenario in ("my_flap", str(folder / "my_flap.toml")):
            assert main([*invite, "--scenario", scenario, "--uses", "3"]) == 0
            out = capsys.readouterr().out
            assert "(scenario my_flap)" in out and "each code admits 3 people, until " in out
            assert "  observer           " in out and f"http://localhost:{http_port}/?code=" in out
            assert f"headset: POST http://localhost:{http_port}/api/join" in out
        assert main([*invite, "--scenario", "my_flop"]) == 1
        err = capsys.readouterr().err
        assert "rehearsal invite: the server refused: 400 unknown scenario 'my_flop' (did you mean 'my_flap'?)" in err
        other = str(_server_data(tmp_path / "other"))
        assert main(["invite", "--data-dir", other, "--http-port", str(http_port), "--scenario", "x"]) == 1
        assert "401 unauthorized (is --data-dir the server's? its admin credential differs)" in capsys.readouterr().err
    finally:
        server.stop()


def test_serve_processes_gives_each_game_server_its_own_webtransport_port():
    import argparse

    from rehearsal.cli import passed_on_flags

    assert passed_on_flags(argparse.Namespace(config=None, webtransport_port=4433)) == ["--webtransport-port", "0"]
    assert passed_on_flags(argparse.Namespace(config=None, webtransport_port=-1)) == ["--webtransport-port", "-1"]
