"""Starting the server: a port in use in one line before the warm-up, progress lines, /healthz while warming."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rehearsal.warm_up import PortInUseError, WarmingResponder, probe_ports, warm_up

ROOT = Path(__file__).resolve().parents[2]


def _taken(kind: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


def test_a_port_in_use_is_named_with_the_flag_that_changes_it():
    with _taken(socket.SOCK_DGRAM) as udp, _taken(socket.SOCK_STREAM) as tcp:
        udp_port, http_port = udp.getsockname()[1], tcp.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            probe_ports(("127.0.0.1", udp_port), ("127.0.0.1", 0))
        assert str(caught.value) == (
            f"udp port {udp_port} on 127.0.0.1 is in use (Address already in use): stop what holds it, or choose "
            "another with --udp-port (setting udp_port, env REHEARSAL_UDP_PORT)"
        )
        with pytest.raises(PortInUseError, match=f"^http port {http_port} on 127.0.0.1 is in use"):
            probe_ports(("127.0.0.1", 0), ("127.0.0.1", http_port))
    probe_ports(("127.0.0.1", udp_port), ("127.0.0.1", http_port))  # free again: nothing raised


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_healthz_answers_warming_while_the_kernels_compile():
    with WarmingResponder("127.0.0.1", 0) as warming:
        port = warming.port
        assert _get(port, "/healthz") == (200, b"warming\n")
        status, body = _get(port, "/readyz")
        assert status == 503 and json.loads(body) == {"error": "warming up"}
        assert _get(port, "/api/sessions")[0] == 503
    with socket.socket() as again:  # the port is let go for the server to listen on
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_the_warming_stand_in_reports_a_port_in_use():
    with _taken(socket.SOCK_STREAM) as tcp:
        port = tcp.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"^http port {port} on 127.0.0.1 is in use"):
            WarmingResponder("127.0.0.1", port)


def test_serve_with_a_port_in_use_says_so_in_one_line_before_warming_up(tmp_path):
    with _taken(socket.SOCK_STREAM) as tcp:
        port = tcp.getsockname()[1]
        began = time.monotonic()
        serve = ["serve", "--data-dir", str(tmp_path), "--udp-port", "0", "--http-port", str(port)]
        done = subprocess.run(
            [sys.executable, "-m", "rehearsal", *serve],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rehearsal serve: http port {port} on 127.0.0.1 is in use (Address already in use)")
    assert "Traceback" not in done.stderr and "warm-up 1/" not in done.stderr
    print(f"refused after {time.monotonic() - began:.1f} s")


@pytest.mark.slow
def test_warm_up_reports_each_stage():
    lines: list[str] = []
    warm_up("basic_skills", progress=lines.append)
    assert lines[0].startswith("warm-up 1/") and "the basic_skills world built" in lines[0]
    total = int(lines[0].split("/")[1].split(":")[0])
    assert len(lines) == total and lines[-1].startswith(f"warm-up {total}/{total}: snapshot encoder (")
    assert any(": grasper on 1 thread (" in line for line in lines)
