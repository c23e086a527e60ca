"""An agent's permission question answered from the page: while a session's hooks say it needs
a permission, the list says what it asks and its terminal view shows it (the tool and its command) with Allow and
Deny; a click answers the held PermissionRequest hook (the agent reads the decision) and the
question goes away. A read-only viewer sees the badge but no buttons.

The agent is a script that plays Claude Code's side: it runs the real `corral hook` with the
hook's JSON on stdin and records what the hook printed."""

import json
import re

from playwright.sync_api import expect

from corral_web import CORRAL, wait_until


BASH = {"tool_name": "Bash", "tool_input": {"command": "rm -rf build", "description": "Remove build"}}


def agent(server, tmp_path, name, asks=BASH):
    decision = tmp_path / f"{name}.json"
    hook = lambda event: f"printf '%s' '{json.dumps(event)}' | {CORRAL} hook"
    script = "\n".join(
        [
            hook({"hook_event_name": "SessionStart", "session_id": name}),
            hook({"hook_event_name": "UserPromptSubmit", "prompt": "clean up"}),
            hook({"hook_event_name": "PermissionRequest", **asks})
            + f" > {decision}",
            hook({"hook_event_name": "Stop"}),
            "exec sleep 600",
        ]
    )
    s = server.spawn(["sh", "-c", script], name=name)
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
