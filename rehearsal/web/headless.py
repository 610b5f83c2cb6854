"""Debian's Chromium, headless through Playwright, and a loopback server for rehearsal/web/static (tests, benchmarks).

Playwright's own browser download is never used: it launches ``/usr/bin/chromium`` (``.ci/run`` installs Debian's
``chromium`` when missing). WebGL2 draws in software through SwiftShader, so pages render without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).resolve().parent / "static"
CHROMIUM = os.environ.get("REHEARSAL_CHROMIUM", "/usr/bin/chromium")
# --no-sandbox: CI runs as root, where Chromium refuses its sandbox. SwiftShader: WebGL2 without a GPU.
CHROMIUM_ARGS = ("--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")
# The page opened before importing modules: ES modules load over http only, never from file://.
HARNESS_HTML = b'<!doctype html><html><head><meta charset="utf-8"><title>harness</title></head><body></body></html>'


class BrowserUnavailableError(RuntimeError):
    """Chromium or Playwright is not installed here; the text says what to install."""


def chromium_path() -> str:
    """The Chromium executable, or BrowserUnavailableError."""
    found = CHROMIUM if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK) else shutil.which(CHROMIUM)
    if not found:
        raise BrowserUnavailableError(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium; .ci/run)")
    return found


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``), closed afterwards; BrowserUnavailableError without one."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserUnavailableError("playwright is not installed (pip install -e '.[test]')") from None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the static folder under /static/, ``extra`` folders under their prefixes (e.g. a test's own
    modules under /tests/) and a blank harness page at /; nothing else."""

    extra: dict[str, str] = {}  # noqa: RUF012 (set per server by static_server)

    extensions_map = {  # noqa: RUF012 (the base class's own attribute, extended)
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
    }

    def do_GET(self) -> None:
        if self.path in ("/", "/index.html"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(HARNESS_HTML)))
            self.end_headers()
            self.wfile.write(HARNESS_HTML)
            return
        if self.path == "/favicon.ico":  # asked for by every page: no icon, and no 404 in the page's console
            self.send_response(204)
            self.end_headers()
            return
        for prefix, directory in self.extra.items():
            if self.path.startswith(prefix):
                self.directory = directory
                self.path = "/" + self.path[len(prefix) :]
                super().do_GET()
                return
        if not self.path.startswith("/static/"):
            self.send_error(404)
            return
        self.path = self.path[len("/static") :]
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        # cross-origin isolation: performance.now() then ticks in microseconds, not 0.1 ms (decode_bench)
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet: test and benchmark output stay readable
        pass


@contextlib.contextmanager
def static_server(directory: Path = STATIC_DIR, extra: dict[str, Path] | None = None) -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT) of a loopback server for ``directory`` under /static/ (and each ``extra``
    folder under its prefix, e.g. {"/tests/": folder}); stopped after."""
    handler_class = type("StaticHandler", (_StaticHandler,), {"extra": {k: str(v) for k, v in (extra or {}).items()}})
    handler = functools.partial(handler_class, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="static-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
