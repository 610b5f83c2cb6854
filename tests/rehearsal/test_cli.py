"""The `rehearsal` command's offline subcommands."""

import base64
import json
import stat
from pathlib import Path

from netcode.transport.connect_token import ConnectToken, decrypt_private_token
from rehearsal.cli import main
from rehearsal.identity import Identity
from rehearsal.roles import Role
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


def test_token_is_minted_from_the_data_dir_key(tmp_path, capsys):
    data = tmp_path / "data"
    args = ["token", "--data-dir", str(data), "--session", "s-9", "--role", "observer", "--name", "Student"]
    assert main([*args, "--udp-port", "41234"]) == 0
    token = ConnectToken.decode(base64.b64decode(capsys.readouterr().out.strip()))
    assert str(token.server_addresses[0]) == "127.0.0.1:41234"
    key_file = data / "token_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    private = decrypt_private_token(token.private_data, PROTOCOL_ID, token.expire_timestamp, token.nonce, key)
    who = Identity.from_user_data(private.user_data)
    assert (who.session, who.role, who.name) == ("s-9", Role.OBSERVER, "Student")


def test_bad_arguments_get_clear_errors(tmp_path, capsys):
    assert main(["token", "--data-dir", str(tmp_path), "--session", "s", "--role", "observer", "--name", " "]) == 2
    assert "display name" in capsys.readouterr().err


def test_invite_without_a_server_says_so(tmp_path, capsys):
    assert main(["invite", "--data-dir", str(tmp_path), "--http-port", "1", "--scenario", "basic_skills"]) == 1
    assert "no server" in capsys.readouterr().err


def test_results_and_replay_show_what_a_session_left_behind(tmp_path, capsys):
    from rehearsal.identity import Identity
    from rehearsal.recording import Recorder
    from rehearsal.results_store import RESULTS_FILE, ResultsStore
    from rehearsal.roles import Role
    from rehearsal.room import Room
    from rehearsal.scenario import load_scenario

    data = tmp_path / "data"
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
