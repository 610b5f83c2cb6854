"""A real redis-server per test module (Debian's binary, loopback, a free port, files in tmp); each test gets
its own key namespace, so tests never see each other's processes. Under CI a missing binary is a failure,
never a skip (``.ci/run`` installs it)."""

from __future__ import annotations

import os
import secrets
import shutil

import pytest

from rehearsal.fleet.directory import Directory
from rehearsal.fleet.redis_process import RedisProcess


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None and not os.environ.get("CI"):
        pytest.skip("redis-server not on PATH (CI installs it: .ci/run ensure_redis)")
    with RedisProcess(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def namespace():
    return f"test:{secrets.token_hex(4)}:"


@pytest.fixture
def directory(redis_server, namespace):
    d = Directory.from_url(redis_server.url, namespace=namespace, ttl_seconds=1.0)
    yield d
    d.client.close()
