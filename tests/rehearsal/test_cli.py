"""The `rehearsal` command's offline subcommands."""

import base64
import stat

from netcode.connect_token import ConnectToken, decrypt_private_token
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
