"""Browser fixtures: a real headless Chromium (Debian's, driven by Playwright) and a loopback static server.

Chromium is Debian's /usr/bin/chromium (`.ci/run` installs it when missing); Playwright's own browser download
is never used (rehearsal.web.headless). WebGL2 draws in software through SwiftShader, so pages render on a
machine without a GPU. Without Chromium (or Playwright) the browser tests skip on a developer's machine and
FAIL under CI (`CI=true`), so CI cannot pass without them. Each test's page leaves a screenshot in
tests-artifacts/<test name>.png (REHEARSAL_TEST_ARTIFACTS overrides the folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from rehearsal.web import headless

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS_DIR = Path(os.environ.get("REHEARSAL_TEST_ARTIFACTS", REPO / "tests-artifacts"))


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail under CI, where the browser tests are mandatory."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests are mandatory under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def static_server():
    """Base URL (http://127.0.0.1:PORT) of a loopback server for rehearsal/web/static (and this folder's own
    modules under /tests/); stopped after the session."""
    with headless.static_server(extra={"/tests/": Path(__file__).resolve().parent}) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (a launch costs seconds)."""
    try:
        with headless.chromium() as browser:
            yield browser
    except headless.BrowserUnavailableError as exc:
        _unavailable(str(exc))


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
