"""Settings: defaults < file < REHEARSAL_* environment < flags, with clear errors (drain_seconds here)."""

import pytest

from rehearsal.settings import Settings, SettingsError, load_settings


def test_drain_seconds_from_the_environment_and_flags(tmp_path):
    assert load_settings(None, env={}).drain_seconds == Settings().drain_seconds == 30.0
    assert load_settings(None, env={"REHEARSAL_DRAIN_SECONDS": "12.5"}).drain_seconds == 12.5
    assert load_settings(None, env={"REHEARSAL_DRAIN_SECONDS": "12.5"}, drain_seconds=3).drain_seconds == 3.0
    config = tmp_path / "rehearsal.toml"
    config.write_text("drain_seconds = 45\n")
    assert load_settings(config, env={}).drain_seconds == 45.0


def test_bad_drain_seconds_are_explained():
    with pytest.raises(SettingsError, match="drain_seconds"):
        load_settings(None, env={"REHEARSAL_DRAIN_SECONDS": "soon"})
    with pytest.raises(SettingsError, match=r"drain_seconds must be in \[0, 3600\]"):
        load_settings(None, env={}, drain_seconds=-1)


def test_tls_files_come_from_any_source_and_only_in_pairs(tmp_path):
    assert load_settings(None, env={}).tls_cert == ""
    config = tmp_path / "rehearsal.toml"
    config.write_text('tls_cert = "/etc/rehearsal/cert.pem"\n')
    both = load_settings(config, env={"REHEARSAL_TLS_KEY": "/etc/rehearsal/key.pem"})  # file + environment
    assert (both.tls_cert, both.tls_key) == ("/etc/rehearsal/cert.pem", "/etc/rehearsal/key.pem")
    assert load_settings(None, env={}, tls_cert="c.pem", tls_key="k.pem").tls_key == "k.pem"
    with pytest.raises(SettingsError, match="tls_cert and tls_key go together"):
        load_settings(config, env={})


def test_a_boolean_that_is_not_one_is_an_error_not_false(tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text('record = "nope"\n')
    with pytest.raises(SettingsError, match=r"^.*settings\.toml: record = 'nope' is not a boolean \(true or false\)$"):
        load_settings(config, env={})
    assert load_settings(None, env={"REHEARSAL_RECORD": "no"}).record is False
    assert load_settings(None, env={"REHEARSAL_RECORD": "TRUE"}).record is True
    with pytest.raises(SettingsError, match=r"^environment: share_observer_stream = 'maybe' is not a boolean"):
        load_settings(None, env={"REHEARSAL_SHARE_OBSERVER_STREAM": "maybe"})


def test_an_unknown_setting_names_the_nearest_one(tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text('scenario_dirs = "x"\n')
    with pytest.raises(
        SettingsError, match=r"settings\.toml: unknown setting 'scenario_dirs' \(did you mean 'scenario_dir'\?\)"
    ):
        load_settings(config, env={})
