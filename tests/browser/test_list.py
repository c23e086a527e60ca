"""Session list and spawn form: a session spawned through the HTTP API after the page loaded
appears in the list without a reload (and disappears when removed); the spawn form shows the
refusal next to the form, and creates nothing (checked through the API), for an empty command
(blank: refused by the page; an empty word '': refused by the server) and for a working
directory that does not exist (the server's error, word for word); a valid spawn then works."""

import re

from playwright.sync_api import expect


def open_list(server, page):
    page.goto(server.login_url())
    expect(page.get_by_test_id("session-count")).to_have_text(re.compile(r"^\d+ sessions?"))


def test_api_spawn_appears_without_reload(server, page):
    open_list(server, page)
    page.evaluate("window.__sameDocument = true")
    s = server.spawn(["sh", "-c", "echo hi; exec cat"], name="live-added")
    row = page.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]')
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-name", "live-added")
    expect(row).to_have_attribute("data-state", "running")
    expect(row).to_contain_text("sh -c 'echo hi; exec cat'")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    server.remove(s["id"])
    expect(row).to_have_count(0)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"


def test_spawn_form_errors_create_nothing(server, page):
    open_list(server, page)
    before = {s["id"] for s in server.sessions()}
    rows_before = page.get_by_test_id("session-row").count()
    form = page.get_by_test_id("spawn-form")
    argv = form.get_by_test_id("spawn-argv")
    name = form.get_by_test_id("spawn-name")
    cwd = form.get_by_test_id("spawn-cwd")
    submit = form.get_by_test_id("spawn-submit")
    error = form.get_by_test_id("spawn-error")  # inside the form, next to its button

    # Blank command: the page does not even ask.
    argv.fill("   ")
    submit.click()
    expect(error).to_have_text("the command is empty")

    # One empty word reaches the server, which refuses it; its message is shown.
    argv.fill("''")
    submit.click()
    expect(error).to_contain_text("argv is empty")
    with_api = server.api("POST", "/v1/sessions", {"argv": [""]}, ok=(400,))
    assert with_api["code"] == "bad_request"
    expect(error).to_have_text(with_api["error"])

    # A working directory that does not exist: the server's error, word for word.
    argv.fill("cat")
    name.fill("bad-cwd")
    cwd.fill("/nonexistent/corral-browser-test")
    error.evaluate("e => e.textContent = ''")
    submit.click()
    expect(error).not_to_have_text("")
    shown = error.inner_text().strip()
    with_api = server.api(
        "POST",
        "/v1/sessions",
        {"argv": ["cat"], "name": "bad-cwd", "cwd": "/nonexistent/corral-browser-test", "restart": "never"},
        ok=(400, 409),
    )
    assert shown == with_api["error"], (shown, with_api)
    expect(error).to_be_visible()
    # Next to the form's button, inside the form's box.
    eb, fb, sb = error.bounding_box(), form.bounding_box(), submit.bounding_box()
    assert fb["y"] <= eb["y"] and eb["y"] + eb["height"] <= fb["y"] + fb["height"], (eb, fb)
    assert abs((eb["y"] + eb["height"] / 2) - (sb["y"] + sb["height"] / 2)) < 40, (eb, sb)

    # Nothing was created, neither on the server nor in the list.
    assert {s["id"] for s in server.sessions()} == before
    expect(page.get_by_test_id("session-row")).to_have_count(rows_before)
    expect(page.locator('[data-testid="session-row"][data-name="bad-cwd"]')).to_have_count(0)

    # The same form with a good directory starts it, and the error goes away.
    cwd.fill("/tmp")
    submit.click()
    expect(form.get_by_test_id("spawn-ok")).to_contain_text("bad-cwd")
    expect(error).to_have_text("")
    created = server.session("bad-cwd")
    assert created["argv"] == ["cat"] and created["state"] == "running", created
    expect(page.locator('[data-testid="session-row"][data-name="bad-cwd"]')).to_be_visible()


def test_a_session_whose_output_cannot_be_logged_says_so(server, page):
    # A full disk stands behind this in practice; here the session's log folder is replaced
    # by a file, so its next segment cannot be made. The page said nothing (`corral ps` did):
    # a session whose program waits for the disk looked healthy.
    import os
    import time
    from pathlib import Path

    s = server.spawn(
        ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; sleep 4; head -c 6000000 /dev/zero | tr '\\0' y; exec sleep 600"],
        name="disk-full",
    )
    logs = Path(server.data_dir, "logs", s["id"])
    deadline = time.monotonic() + 30
    while not (logs.exists() and sum(f.stat().st_size for f in logs.iterdir()) > 2_500_000):
        assert time.monotonic() < deadline, "the first output was never logged"
        time.sleep(0.1)
    os.rename(logs, str(logs) + ".moved")
    logs.write_text("not a folder")
    open_list(server, page)
    row = page.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]')
    expect(row).to_contain_text(re.compile("log failing"), timeout=30_000)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    expect(page.get_by_test_id("persist-error")).to_be_visible(timeout=15_000)
    logs.unlink()
    os.rename(str(logs) + ".moved", logs)
    expect(page.get_by_test_id("persist-error")).to_be_hidden(timeout=15_000)
    server.remove(s["id"])


def test_the_list_puts_what_needs_you_first_and_says_what_it_asks(server, page):
    """Rows in the order a person acts on them, whatever their names: a question first, then an
    agent whose turn ended, then one at work (its own badge, not the plain `running` of any
    process), then the rest (an agent that has done nothing yet is `ready`, not waiting). A question to choose from says its question, not its JSON; a
    command line names its program, not the program's whole path (the path is its tooltip)."""
    import json

    from corral_web import CORRAL, wait_until

    hook = lambda event: f"printf '%s' '{json.dumps(event)}' | {CORRAL} hook"
    start = [hook({"hook_event_name": "SessionStart", "session_id": "x"}),
             hook({"hook_event_name": "UserPromptSubmit", "prompt": "go"})]
    choose = {"tool_name": "AskUserQuestion",
              "tool_input": {"questions": [{"question": "Which colour?", "options": []}]}}
    scripts = {
        "a-plain": None,
        "a-ready": [hook({"hook_event_name": "SessionStart", "session_id": "y", "source": "startup"})],
        "b-works": start,
        "c-waits": start + [hook({"hook_event_name": "Stop"})],
        "d-asks": start + [hook({"hook_event_name": "PermissionRequest", **choose})],
    }
    made = {}
    # An agent that never started: it waits on its start screen (Claude Code's folder trust,
    # which runs no hook). It says so once its screen is still, and goes first.
    # (A script: the profile puts its settings after the program, which this one ignores.)
    import os
    import tempfile

    script = os.path.join(tempfile.mkdtemp(), "trust.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho 'Do you trust this folder? 1. Yes 2. No'\nexec cat\n")
    os.chmod(script, 0o755)
    made["z-trust"] = server.api("POST", "/v1/sessions", {"name": "z-trust", "agent": "claude", "argv": [script]})
    for name, lines in scripts.items():
        argv = ["/bin/cat"] if lines is None else ["sh", "-c", "\n".join(lines + ["exec sleep 600"])]
        made[name] = server.spawn(argv, name=name)
    # A program whose flags name a state: found by its program, not by its flags.
    made["e-flags"] = server.spawn(["sh", "-c", "exec cat", "--permission-mode", "default"], name="e-flags")
    want = {"a-plain": None, "a-ready": "idle", "b-works": "working", "c-waits": "idle", "d-asks": "needs_permission"}
    for name, attention in want.items():
        wait_until(lambda: server.session(made[name]["id"])["attention"] == attention, 20, f"{name} {attention}")
    open_list(server, page)
    rows = page.locator('[data-testid="session-row"]')
    expect(rows.filter(has_text="a-plain")).to_be_visible()
    row = lambda n: page.locator(f'[data-testid="session-row"][data-name="{n}"]')
    # Pushed once the server saw its screen still (5 s): no reload.
    expect(row("z-trust").get_by_test_id("attention")).to_have_text("asks on its screen", timeout=20_000)
    expect(row("z-trust")).to_contain_text("has not started, its screen asks: Do you trust this folder?")
    order = [n for n in rows.evaluate_all("rs => rs.map(r => r.dataset.name)") if n in scripts or n == "z-trust"]
    assert order == ["d-asks", "z-trust", "c-waits", "b-works", "a-plain", "a-ready"], order
    # Questions are counted apart from finished turns.
    expect(page.get_by_test_id("session-count")).to_contain_text("· 2 asking · 1 waiting")
    expect(row("d-asks")).to_contain_text("asks: choose: Which colour?")
    expect(row("b-works").get_by_test_id("attention")).to_have_text("working")
    # An agent that has done nothing yet is ready, not waiting for its user after a turn.
    expect(row("a-ready").get_by_test_id("attention")).to_have_text("ready")
    expect(row("a-ready")).not_to_have_class(re.compile("waiting"))
    expect(row("c-waits")).to_have_class(re.compile("waiting"))
    plain = row("a-plain").locator(".argv")
    expect(plain).to_have_text("cat")
    expect(plain).to_have_attribute("title", "/bin/cat")
    # The filter finds what asks by the page's words and the CLI's, not by a flag's name.
    mine = lambda: [n for n in rows.evaluate_all("rs => rs.map(r => r.dataset.name)") if n in made]
    box = page.get_by_test_id("filter")
    for words, want in [("permission", ["d-asks"]), ("needs_permission", ["d-asks"]),
                        ("working", ["b-works"]), ("colour", ["d-asks"]), ("asking", ["d-asks", "z-trust"]),
                        ("sh", ["b-works", "c-waits", "d-asks", "a-ready", "e-flags", "z-trust"])]:
        box.fill(words)
        wait_until(lambda: sorted(mine()) == sorted(want), 5, f"{words!r}: {mine()} not {want}")
    box.fill("")
    for s in made.values():
        server.remove(s["id"])


def test_running_is_said_once_per_row(server, page, new_page):
    # The state column says "running": a badge saying it again beside it goes (a phone, whose
    # rows have no state column, keeps the badge); an exit status, which says more, stays.
    s = server.spawn(["cat"], name="once-running")
    ended = server.spawn(["sh", "-c", "exit 3"], name="once-ended")
    open_list(server, page)
    row = page.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]')
    expect(row.locator(".c-state")).to_have_text("running")
    expect(row.get_by_test_id("attention")).to_be_hidden()
    gone = page.locator(f'[data-testid="session-row"][data-session-id="{ended["id"]}"]')
    expect(gone.get_by_test_id("attention")).to_have_text("exit 3")
    phone = new_page(phone=True)
    open_list(server, phone)
    prow = phone.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]')
    expect(prow.get_by_test_id("attention")).to_have_text("running")
    expect(prow.get_by_test_id("attention")).to_be_visible()


def test_notifications_refused_by_the_browser_are_said(server, page):
    # The browser refuses (headless chromium denies the permission): the button said nothing.
    open_list(server, page)
    page.get_by_test_id("notify-toggle").click()
    expect(page.get_by_test_id("toast").filter(has_text="notifications")).to_be_visible()
    expect(page.get_by_test_id("notify-toggle")).to_have_text("notify")
