"""RedisProcess: a real redis-server under a folder given relative to the working directory."""

from __future__ import annotations

import os
import shutil

import pytest
import redis

from rehearsal.fleet.redis_process import RedisProcess


def test_a_relative_folder_starts_and_serves(tmp_path, monkeypatch):
    # redis-server changes into --dir before opening --logfile: a relative folder once made it exit at once
    if shutil.which("redis-server") is None and not os.environ.get("CI"):
        pytest.skip("redis-server not on PATH (CI installs it: .ci/run ensure_redis)")
    monkeypatch.chdir(tmp_path)
    with RedisProcess("runs/redis") as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
    assert (tmp_path / "runs" / "redis" / "redis.log").is_file()
