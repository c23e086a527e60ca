"""Fixtures of the browser tests: a real `corral serve` per test module (fresh temp data dir,
SIGTERM and a check that no process is left behind at the end), one headless Debian chromium per
run driven by Playwright, and pages in fresh browser contexts (own cookies) that fail the test
on any uncaught JavaScript error.

Run: python3 -m pytest -q tests/browser   (prerequisites: scripts/setup; the debug binary built).
A missing chromium, Playwright or corral binary is an error, never a skip.
"""

from __future__ import annotations

import pytest

# No importorskip: without Playwright the suite must fail, not pass empty.
from playwright.sync_api import expect, sync_playwright

from corral_web import CONN_RECORDER, Server, launch_browser

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}

# The machine may be busy (cargo builds alongside): give assertions some slack.
expect.set_options(timeout=10_000)


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as pw:
        b = launch_browser(pw)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    s = Server().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def new_page(browser):
    """Factory: `new_page(viewport=..., phone=False)` opens a page in its own context (own
    cookies); all are closed at the end, and uncaught page errors fail the test."""
    contexts = []
    errors: list[str] = []

    def make(viewport=None, phone=False, scale=1):
        opts = {"viewport": viewport or (PHONE if phone else DESKTOP), "device_scale_factor": scale}
        if phone:
            opts.update(is_mobile=True, has_touch=True)
        ctx = browser.new_context(**opts)
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.add_init_script(CONN_RECORDER)
        page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not errors, "uncaught errors in the page:\n" + "\n".join(errors)


@pytest.fixture
def page(new_page):
    return new_page()
