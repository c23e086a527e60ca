#!/usr/bin/env python3
"""Screenshots of corral's web page for docs/screenshots/ (not part of the pytest run).

    python3 tests/browser/screenshots.py [--out docs/screenshots]

Starts a real `corral serve` in a temp data dir with a few sessions (one waiting for a
permission through a Claude Code hook event, one that failed, an interactive bash that was given
a few commands), then saves: desktop list, desktop terminal, phone list, phone terminal and the
login page (desktop and phone). Needs what the browser tests need (scripts/setup, debug binary).

Phone shots are taken at 2x by a chromium started with --force-device-scale-factor=2: with
Playwright's emulated device scale factor alone, headless chromium draws xterm's WebGL canvas
at the wrong scale (an artefact of the emulation: a real 2x display renders it right).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from corral_web import CHROMIUM, CHROMIUM_ARGS, REPO, Server, image_stats, launch_browser, wait_js, wait_until

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}

BASH = ["bash", "--norc", "--noprofile", "-i"]
PS1 = r"\[\e[1;32m\]dev@corral\[\e[0m\]:\[\e[1;34m\]\w\[\e[0m\]\$ "
COMMANDS = [
    "cd /usr/share",
    "ls --color=always -d doc* i* l* m*",
    "printf '\\e[1;33mwarning\\e[0m: 3 tests slow, \\e[1;32m142 passed\\e[0m\\n'",
    "uname -sr",
]


def setup_sessions(server: Server) -> dict:
    env = [["PS1", PS1], ["TERM", "xterm-256color"], ["HOME", "/tmp"]]
    made = {}
    made["shell"] = server.spawn(BASH, name="shell", env=env, cwd="/tmp")
    made["phone-shell"] = server.spawn(BASH, name="deploy", env=env, cwd="/tmp")
    made["agent"] = server.spawn(
        ["sh", "-c", "echo '● Bash(cargo test --workspace)'; exec cat"], name="claude-refactor"
    )
    server.hook(
        made["agent"]["id"],
        {"hook_event_name": "Notification", "message": "Claude needs your permission to use Bash"},
    )
    made["logs"] = server.spawn(["sh", "-c", "while :; do date '+%T tick'; sleep 2; done"], name="log-tail")
    made["worker"] = server.spawn(["sleep", "86400"], name="queue-worker", restart="on_failure")
    made["failed"] = server.spawn(["sh", "-c", "echo 'error: missing config' >&2; exit 3"], name="migrate-db")
    made["py"] = server.spawn(
        ["python3", "-c", "import time\nwhile True: time.sleep(5)"], name="python-repl"
    )
    wait_until(lambda: server.session(made["failed"]["id"])["state"] != "running", 10, "migrate-db to end")
    return made


def type_commands(page):
    page.get_by_test_id("terminal").click()
    for c in COMMANDS:
        page.keyboard.type(c)
        page.keyboard.press("Enter")
        time.sleep(0.15)
    wait_js(page, "window.corral.termText().includes('Linux')", 10, "uname output")


def check_and_save(browser, page, path: Path):
    page.wait_for_timeout(400)  # let xterm paint and the uptime tick
    png = page.screenshot()
    st = image_stats(browser, png)
    if st["std"] < 12 or st["colors"] < 24:
        raise SystemExit(f"{path.name} looks blank: {st}")
    path.write_bytes(png)
    print(f"{path}  {st['width']}x{st['height']}  {len(png) // 1024} KiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    server = Server().start()
    try:
        made = setup_sessions(server)
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            phone_browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--force-device-scale-factor=2"]
            )
            try:
                # Desktop.
                ctx = browser.new_context(viewport=DESKTOP)
                page = ctx.new_page()
                page.goto(server.login_url(hash=f"/s/{made['shell']['id']}"))
                wait_js(page, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
                type_commands(page)
                check_and_save(browser, page, out / "desktop-terminal.png")
                page.goto(f"{server.url}/#/")
                expect(page.get_by_test_id("session-row")).to_have_count(len(made))
                expect(page.locator('[data-testid="attention"][data-attention]:not([data-attention=""])')).to_have_count(1)
                page.mouse.move(1270, 790)  # no hover highlight
                page.wait_for_timeout(1200)  # uptimes and cpu columns filled
                check_and_save(browser, page, out / "desktop-list.png")
                ctx.close()

                ctx = browser.new_context(viewport=DESKTOP)
                page = ctx.new_page()
                page.goto(server.url + "/")
                expect(page.get_by_test_id("login")).to_be_visible()
                check_and_save(browser, page, out / "login.png")
                ctx.close()

                # Phone (2x, like a real phone's screen).
                ctx = phone_browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
                page = ctx.new_page()
                page.goto(server.login_url())
                expect(page.get_by_test_id("session-row")).to_have_count(len(made))
                page.wait_for_timeout(1200)
                png_list = page.screenshot()
                page.goto(f"{server.url}/#/s/{made['phone-shell']['id']}")
                wait_js(page, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 15)
                type_commands(page)
                page.wait_for_timeout(400)
                png_term = page.screenshot()
                ctx.close()
                for name, png in (("phone-list.png", png_list), ("phone-terminal.png", png_term)):
                    st = image_stats(browser, png)
                    if st["std"] < 12 or st["colors"] < 24:
                        raise SystemExit(f"{name} looks blank: {st}")
                    (out / name).write_bytes(png)
                    print(f"{out / name}  {st['width']}x{st['height']}  {len(png) // 1024} KiB")

                ctx = phone_browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
                page = ctx.new_page()
                page.goto(server.url + "/?token=wrong")
                expect(page.get_by_test_id("login-message")).to_have_text(re.compile("token"))
                png = page.screenshot()
                (out / "phone-login.png").write_bytes(png)
                print(f"{out / 'phone-login.png'}  {len(png) // 1024} KiB")
                ctx.close()
            finally:
                phone_browser.close()
                browser.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
