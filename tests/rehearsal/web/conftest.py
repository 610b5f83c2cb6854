"""Browser fixtures: a real headless Chromium (Debian's, driven by Playwright) and a loopback static server.

Chromium is Debian's /usr/bin/chromium (`.ci/run` installs it when missing); Playwright's own browser download
is never used. WebGL2 draws in software through SwiftShader, so the page renders on a machine without a GPU.
Without Chromium (or Playwright) the browser tests skip on a developer's machine and FAIL under CI (`CI=true`),
so CI cannot pass without them. Each test's page leaves a screenshot in tests-artifacts/<test name>.png.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
STATIC_DIR = REPO / "rehearsal" / "web" / "static"
ARTIFACTS_DIR = Path(os.environ.get("REHEARSAL_TEST_ARTIFACTS", REPO / "tests-artifacts"))
CHROMIUM = os.environ.get("REHEARSAL_CHROMIUM", "/usr/bin/chromium")
# --no-sandbox: CI runs as root, where Chromium refuses its sandbox. SwiftShader: WebGL2 without a GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
# The page a test opens before importing modules: ES modules load over http only, never from file://.
HARNESS_HTML = b'<!doctype html><html><head><meta charset="utf-8"><title>harness</title></head><body></body></html>'


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail under CI, where the browser tests are mandatory."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests are mandatory under CI: {reason}", pytrace=False)
    pytest.skip(reason)


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Serves rehearsal/web/static under /static/ and a blank harness page at /; nothing else."""

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
        if not self.path.startswith("/static/"):
            self.send_error(404)
            return
        self.path = self.path[len("/static") :]
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet: pytest output stays readable
        pass


@pytest.fixture(scope="session")
def static_server() -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT) of a loopback server for the static files; stopped after the session."""
    handler = functools.partial(_StaticHandler, directory=str(STATIC_DIR))
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


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (a launch costs seconds)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        _unavailable(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium; .ci/run does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1]).strip("_") or "page"


@pytest.fixture
def page(browser, request):
    """A fresh page (own context: no shared storage) for one test; its screenshot is kept as an artifact.

    Errors the page throws or logs are collected in `page.js_errors` (a list of strings) for tests to assert on."""
    context = browser.new_context(viewport={"width": 960, "height": 640})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.error: {msg.text}") if msg.type == "error" else None)
    page.js_errors = errors
    try:
        yield page
    finally:
        try:
            ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS_DIR / f"{_artifact_name(request.node.nodeid)}.png"))
        except Exception as exc:  # a closed or crashed page must not hide the test's own result
            print(f"screenshot failed: {exc}")
        context.close()


@pytest.fixture
def harness(page, static_server):
    """The page opened on the blank harness of `static_server`, ready for `import('/static/js/...')`."""
    page.goto(static_server + "/")
    return page
