"""An agent's permission question answered from the page: while a session's hooks say it needs
a permission, the list says what it asks and its terminal view shows it (the tool and its command) with Allow and
Deny; a click answers the held PermissionRequest hook (the agent reads the decision) and the
question goes away; a Deny can carry a reason the agent reads. A read-only viewer sees the badge
but no buttons. A question only the agent's own terminal can answer (its hook's wait ran out, as
after an upgrade) is said where the buttons were. The list puts the agent that has asked longest
first; a toast about another session's question goes once tapped, and none is said about the
session on screen.

The agent is a script that plays Claude Code's side: it runs the real `corral hook` with the
hook's JSON on stdin and records what the hook printed."""

import json
import re
import time

from playwright.sync_api import expect

from corral_web import CORRAL, Server, wait_until


BASH = {"tool_name": "Bash", "tool_input": {"command": "rm -rf build", "description": "Remove build"}}


def agent(server, tmp_path, name, asks=BASH, gate=None, then_stop=True):
    """An agent that asks `asks` (once the file `gate` exists, when given) and records the
    hook's output; then, unless `then_stop` is false, ends its turn."""
    decision = tmp_path / f"{name}.json"
    hook = lambda event: f"printf '%s' '{json.dumps(event)}' | {CORRAL} hook"
    script = "\n".join(
        ([f"while [ ! -e {gate} ]; do sleep 0.05; done"] if gate else [])
        + [
            hook({"hook_event_name": "SessionStart", "session_id": name}),
            hook({"hook_event_name": "UserPromptSubmit", "prompt": "clean up"}),
            hook({"hook_event_name": "PermissionRequest", **asks})
            + f" > '{decision}'",
        ]
        + ([hook({"hook_event_name": "Stop"})] if then_stop else [])
        + ["exec sleep 600"]
    )
    s = server.spawn(["sh", "-c", script], name=name)
    if not gate:
        wait_until(lambda: server.session(s["id"])["attention"] == "needs_permission", 20, "the question")
    return s, decision


def test_allow_and_deny_from_the_terminal_view(server, page, new_page, tmp_path):
    for name, button, behavior in [("asks-allow", "ask-allow", "allow"), ("asks-deny", "ask-deny", "deny")]:
        s, decision = agent(server, tmp_path, name)
        # A read-only viewer is told, but cannot answer.
        viewer = new_page()
        viewer.goto(server.login_url(token=server.scoped_token(s["id"], "read")))
        expect(viewer.get_by_test_id("attention")).to_contain_text(re.compile("permission", re.I))
        expect(viewer.get_by_test_id("ask")).to_be_hidden()
        # The list says what it asks, in place of the command line.
        page.goto(server.login_url())
        row = page.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]')
        expect(row).to_contain_text("asks: Bash: rm -rf build")
        page.goto(server.login_url(hash=f"/s/{s['id']}"))
        ask = page.get_by_test_id("ask")
        expect(ask).to_be_visible()
        expect(page.get_by_test_id("ask-text")).to_have_text("Bash: rm -rf build")
        page.get_by_test_id(button).click()
        expect(ask).to_be_hidden()
        wait_until(lambda: decision.exists() and decision.read_text().strip(), 10, "the hook's output")
        out = json.loads(decision.read_text())
        assert out["hookSpecificOutput"]["decision"]["behavior"] == behavior, out
        wait_until(lambda: server.session(s["id"])["attention"] == "idle", 10, "the turn's end")


def test_a_question_to_choose_from_is_answered_with_a_choice(server, page, tmp_path):
    # Claude Code's AskUserQuestion asks through the same hook: the page shows the question and
    # a button per choice (no Allow, which would dismiss it), and a click gives the agent the
    # choice as the tool's input.
    question = "Which color do you prefer?"
    asks = {
        "tool_name": "AskUserQuestion",
        "tool_input": {
            "questions": [
                {
                    "question": question,
                    "header": "Color",
                    "multiSelect": False,
                    "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}],
                }
            ]
        },
    }
    s, decision = agent(server, tmp_path, "asks-choice", asks)
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    ask = page.get_by_test_id("ask")
    expect(ask).to_be_visible()
    expect(page.get_by_test_id("ask-text")).to_have_text(question)
    expect(page.get_by_test_id("ask-allow")).to_be_hidden()
    expect(page.get_by_test_id("ask-deny")).to_have_text("Dismiss")
    # The header's badge says what the bar says (it said "needs permission").
    expect(page.get_by_test_id("attention")).to_have_text("asks you to choose")
    choices = page.get_by_test_id("ask-choice")
    expect(choices).to_have_text(["Red", "Blue"])
    choices.nth(1).click()
    expect(ask).to_be_hidden()
    wait_until(lambda: decision.exists() and decision.read_text().strip(), 10, "the hook's output")
    out = json.loads(decision.read_text())["hookSpecificOutput"]["decision"]
    assert out["behavior"] == "allow", out
    assert out["updatedInput"]["answers"] == {question: "Blue"}, out
    assert out["updatedInput"]["questions"][0]["question"] == question, out


def test_a_page_watching_one_session_is_told_another_asks(server, page, tmp_path):
    # A phone shows one session at a time: another agent that starts to ask is said on the page,
    # a tap away (the tab title's count went unseen, and phones' browsers may not notify).
    watched = server.spawn(["cat"], name="watched")
    page.goto(server.login_url(hash=f"/s/{watched['id']}"))
    expect(page.get_by_test_id("terminal")).to_be_visible()
    expect(page.get_by_test_id("conn-state")).to_have_text("connected")
    s, _ = agent(server, tmp_path, "elsewhere")
    told = page.locator('a[data-testid="toast"]', has_text="elsewhere asks permission")
    expect(told).to_be_visible()
    told.click()
    expect(page.get_by_test_id("ask-text")).to_have_text("Bash: rm -rf build")
    # Tapped, it goes (it stayed 8 s over the dialog it had opened). Well before its 8 s.
    expect(page.get_by_test_id("toast").filter(has_text="elsewhere")).to_have_count(0, timeout=3000)


def test_no_toast_for_the_session_on_screen(server, page, tmp_path):
    # Its ask bar says it: a toast would only cover the terminal. The route names it by its
    # name, percent-encoded (a space), as a link or a typed address may.
    gate = tmp_path / "go-on-screen"
    s, _ = agent(server, tmp_path, "on screen", gate=gate)
    # The list first: the page knows the session before it asks (a question found already open
    # at load is no news, told by no toast at all).
    page.goto(server.login_url())
    expect(page.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]')).to_be_visible()
    page.evaluate("location.hash = '#/s/on%20screen'")
    expect(page.get_by_test_id("term-state")).to_have_text("running")
    gate.touch()
    expect(page.get_by_test_id("ask-text")).to_have_text("Bash: rm -rf build")
    # Not `expect(...).to_have_count(0)`: it would wait out a toast's 8 s.
    page.wait_for_timeout(1500)
    told = page.get_by_test_id("toast").all_inner_texts()
    assert not told, told
    server.api("POST", f"/v1/sessions/{s['id']}/permission", {"behavior": "deny"})


def test_deny_with_a_reason(server, page, tmp_path):
    # The agent reads why (Claude tells its model): a reason typed under the question, sent
    # with the denial. Cancel puts the one-tap Deny back; the reason is not sent.
    s, decision = agent(server, tmp_path, "asks-why")
    page.goto(server.login_url(hash=f"/s/{s['id']}"))
    ask = page.get_by_test_id("ask")
    expect(ask).to_be_visible()
    field = page.get_by_test_id("ask-reason-input")
    expect(field).to_be_hidden()
    page.get_by_test_id("ask-deny-why").click()
    expect(field).to_be_visible()
    expect(field).to_be_focused()
    expect(page.get_by_test_id("ask-deny")).to_be_hidden()
    field.fill("not this")
    page.get_by_test_id("ask-reason-cancel").click()
    expect(field).to_be_hidden()
    expect(page.get_by_test_id("ask-deny")).to_be_visible()
    assert server.session(s["id"])["attention"] == "needs_permission"
    page.get_by_test_id("ask-deny-why").click()
    expect(field).to_have_value("")
    field.fill("use `make clean` instead")
    page.get_by_test_id("ask-reason-send").click()
    expect(ask).to_be_hidden()
    wait_until(lambda: decision.exists() and decision.read_text().strip(), 10, "the hook's output")
    out = json.loads(decision.read_text())["hookSpecificOutput"]["decision"]
    assert out["behavior"] == "deny", out
    assert out["message"] == "use `make clean` instead", out


def test_the_agent_that_asked_first_is_listed_first(server, page, tmp_path):
    # Within a rank (asking first), the one that has waited longest comes first, not the first
    # by name; a reload keeps that order (the page keeps when it first saw each question).
    page.goto(server.login_url())
    expect(page.get_by_test_id("conn-state")).to_have_text("connected")
    first, _ = agent(server, tmp_path, "zz-asked-first")
    row = lambda s: page.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]')
    expect(row(first)).to_contain_text("asks: Bash")
    time.sleep(0.3)
    second, _ = agent(server, tmp_path, "aa-asked-second")
    expect(row(second)).to_contain_text("asks: Bash")
    order = lambda: [
        n for n in page.locator('[data-testid="session-row"]').evaluate_all("rs => rs.map((r) => r.dataset.name)")
        if n in ("zz-asked-first", "aa-asked-second")
    ]
    assert order() == ["zz-asked-first", "aa-asked-second"], order()
    page.reload()
    expect(row(second)).to_contain_text("asks: Bash")
    assert order() == ["zz-asked-first", "aa-asked-second"], order()
    for s in (first, second):
        server.api("POST", f"/v1/sessions/{s['id']}/permission", {"behavior": "deny"})


def test_a_question_left_to_its_terminal_is_said_where_the_buttons_were(new_page, tmp_path):
    # When nothing outside can answer a question any more (the hook's wait ran out — here after
    # 3 s —, or the server was upgraded or restarted while it asked), the session still needs
    # permission (`permission` gone): the view says to answer it in the terminal, not nothing.
    server = Server(config="[agents]\npermission_wait_secs = 3\n").start()
    pages = []
    try:
        gate = tmp_path / "go-terminal"
        s, decision = agent(server, tmp_path, "asks-there", gate=gate, then_stop=False)
        page = new_page()
        pages.append(page)
        page.goto(server.login_url(hash=f"/s/{s['id']}"))
        expect(page.get_by_test_id("conn-state")).to_have_text("connected")
        gate.touch()
        expect(page.get_by_test_id("ask")).to_be_visible()
        wait_until(lambda: decision.exists(), 15, "the hook to give up")
        wait_until(
            lambda: (lambda v: v["attention"] == "needs_permission" and "permission" not in v)(server.session(s["id"])),
            10,
            "the question left to the terminal",
        )
        expect(page.get_by_test_id("ask")).to_be_hidden()
        note = page.get_by_test_id("ask-terminal")
        expect(note).to_be_visible()
        expect(note).to_contain_text("asks in its terminal")
        expect(note).to_contain_text("answer it there")
        expect(note).to_contain_text("Enter")
        expect(page.get_by_test_id("attention")).to_contain_text("needs permission")
        # A read-only viewer cannot type into it: not told to.
        viewer = new_page()
        pages.append(viewer)
        viewer.goto(server.login_url(token=server.scoped_token(s["id"], "read")))
        expect(viewer.get_by_test_id("attention")).to_contain_text("needs permission")
        expect(viewer.get_by_test_id("ask-terminal")).to_be_hidden()
    finally:
        # Closed before their server goes (they would say they lost it).
        for p in pages:
            p.close()
        server.stop()
