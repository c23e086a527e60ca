"""Login and routing: `corral web`'s link (`/?code=`, good once) and `/?token=` log in (session list shown, token gone from the address bar,
cookie HttpOnly, a reload stays logged in); a wrong token shows the login view with a plain
message (no stack trace, no list); an unknown session id in the hash shows "no such session"
with a working link back to the list."""

import json
import re
import urllib.error
import urllib.request
import uuid

from playwright.sync_api import expect

from corral_web import wait_js


def test_login_by_url_shows_list_and_drops_token(server, page):
    s = server.spawn(["cat"], name="login-cat")
    page.goto(server.login_url())
    row = page.locator(f'[data-testid="session-row"][data-session-id="{s["id"]}"]')
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-name", "login-cat")
    assert "token" not in page.url and server.token not in page.url, page.url
    # Not in the history entry either, and not readable by scripts.
    assert server.token not in page.evaluate("location.href + JSON.stringify(history.state)")
    assert server.token not in page.evaluate("document.cookie")
    cookies = page.context.cookies()
    assert cookies and all(c["httpOnly"] for c in cookies), cookies
    expect(page.get_by_test_id("conn-state")).to_have_text("connected")
    # The cookie alone keeps us logged in.
    page.reload()
    expect(row).to_be_visible()
    expect(page.get_by_test_id("login")).to_have_count(0)


def test_the_link_corral_web_prints_logs_in_once_without_the_token(browser, server, page):
    """`corral web` prints a link with a login code, not the token: the browser's history and
    the shell's never hold the token. The code logs in once; the same link again (another
    browser, or this one logged out) shows why it no longer works."""
    link = server.web_link()
    assert "?code=" in link and server.token not in link, link
    page.goto(link)
    expect(page.get_by_test_id("session-list")).to_be_visible()
    assert "code=" not in page.url, page.url
    cookies = page.context.cookies()
    assert cookies and all(c["httpOnly"] for c in cookies), cookies
    other = browser.new_context()
    try:
        again = other.new_page()
        again.goto(link)
        msg = again.get_by_test_id("login-message")
        expect(msg).to_contain_text("used already or has expired")
        expect(again.get_by_test_id("session-list")).to_have_count(0)
    finally:
        other.close()


def test_wrong_token_shows_login_message(server, page):
    page.goto(server.login_url(token="corral_admin_" + "0" * 64))
    expect(page.get_by_test_id("login")).to_be_visible()
    msg = page.get_by_test_id("login-message")
    expect(msg).to_be_visible()
    text = msg.inner_text().strip()
    assert re.search(r"token", text, re.I), text
    body = page.locator("body").inner_text()
    for trace in ("    at ", "Error:", ".js:", "undefined", "[object"):
        assert trace not in body, f"{trace!r} shown on the login page:\n{body}"
    assert "token=" not in page.url, page.url
    expect(page.get_by_test_id("session-list")).to_have_count(0)
    expect(page.get_by_test_id("login-token")).to_be_visible()
    # The login form then works with the right token.
    page.get_by_test_id("login-token").fill(server.token)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("session-list")).to_be_visible()


def test_unknown_session_shows_no_such_session(server, page):
    missing = str(uuid.uuid4())
    page.goto(server.login_url(hash=f"/s/{missing}"))
    gone = page.get_by_test_id("no-session")
    expect(gone).to_be_visible()
    expect(gone).to_contain_text(re.compile("no such session", re.I))
    expect(gone).to_contain_text(missing)
    expect(page.get_by_test_id("terminal")).to_have_count(0)
    # No state or badge for a session that does not exist (a grey dot and an empty outline).
    page.wait_for_timeout(300)
    expect(page.get_by_test_id("term-state")).to_be_hidden()
    expect(page.get_by_test_id("attention")).to_be_hidden()
    back = gone.locator('a[href="#/"]')
    expect(back).to_be_visible()
    back.click()
    expect(page.get_by_test_id("session-list")).to_be_visible()
    assert page.url.endswith("#/"), page.url


def test_a_scoped_token_is_not_sent_to_corral_web_to_log_in_again(server, page):
    # A read token's user has no `corral web`: the log-out question names the link they have.
    s = server.spawn(["cat"], name="scoped-out")
    page.goto(server.login_url(token=server.scoped_token(s["id"], "read")))
    expect(page.get_by_test_id("conn-state")).to_have_text("connected")
    page.get_by_test_id("logout").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_contain_text("the link you were given, or its token")
    expect(dialog).not_to_contain_text("corral web")
    page.get_by_test_id("confirm-cancel").click()


def test_a_revoked_token_logs_its_page_out_saying_why(server, page):
    # A phone watching on a read-only token: `corral token revoke` closes its connection, and
    # the page says the token was revoked instead of retrying forever or blaming the token.
    s = server.spawn(["sh", "-c", "while :; do echo tick; sleep 0.2; done"], name="watched")
    token = server.scoped_token(s["id"], "read")
    page.goto(server.login_url(token=token))
    expect(page.get_by_test_id("terminal")).to_be_visible()
    expect(page.get_by_test_id("conn-state")).to_have_text("connected")
    token_id = token.split("_")[1]
    server.api("DELETE", f"/v1/tokens/{token_id}")
    expect(page.get_by_test_id("login")).to_be_visible()
    expect(page.get_by_test_id("login-message")).to_contain_text(re.compile("revoked", re.I))
    expect(page.get_by_test_id("terminal")).to_have_count(0)


def test_logout_ends_the_login_in_every_tab_of_the_browser(server, page):
    # Two tabs of one browser share its cookie: logging out in one closes the other's live
    # connection too (it stayed connected and could still type), and says why.
    server.spawn(["cat"], name="two-tabs")
    page.goto(server.login_url())
    expect(page.get_by_test_id("conn-state")).to_have_text("connected")
    other = page.context.new_page()
    other.goto(server.url + "/")
    expect(other.get_by_test_id("conn-state")).to_have_text("connected")
    page.get_by_test_id("logout").click()
    # Asked first: logging back in needs the token again (said in plain words, no markdown).
    expect(page.get_by_test_id("confirm-dialog")).to_contain_text("a new login link (the command corral web prints one)")
    expect(page.get_by_test_id("confirm-dialog")).not_to_contain_text("`")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("login")).to_be_visible()
    expect(other.get_by_test_id("login")).to_be_visible()
    expect(other.get_by_test_id("login-message")).to_contain_text(re.compile("logged out", re.I))
    # A login other than the page's own JSON one (a form or text/plain post from another
    # site) is refused.
    req = urllib.request.Request(
        server.url + "/v1/login",
        method="POST",
        data=json.dumps({"token": server.token}).encode(),
        headers={"content-type": "text/plain"},
    )
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a text/plain login was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400, e.code


def test_a_short_id_opens_its_session(server, page):
    # The 8 characters `corral ps` prints name the session in the page's address too.
    s = server.spawn(["sh", "-c", "echo short-id-here; exec cat"], name="short-id-page")
    page.goto(server.login_url(hash=f"/s/{s['id'][:8]}"))
    expect(page.get_by_test_id("terminal")).to_be_visible()
    wait_js(page, f"window.corral.sessionId() === {s['id']!r}", 15, "the session opened")
    expect(page.get_by_test_id("no-session")).to_have_count(0)


def test_another_page_on_this_host_cannot_use_the_login_cookie(server, page):
    # Cross-site request forgery: SameSite=Strict keeps the cookie from other *sites*, but
    # every page on http://127.0.0.1:<any port> is the same site, so a browser logged in to
    # corral sends the cookie with that page's requests too. A text/plain POST needs no CORS
    # preflight: before the fix, such a page spawned a program of its choosing.
    import http.server
    import threading

    marker = f"csrf-{uuid.uuid4().hex[:8]}"
    spec = json.dumps({"argv": ["sh", "-c", "sleep 100"], "name": marker})
    evil = f"""<!doctype html><script>
      fetch({server.url + "/v1/sessions"!r}, {{method: "POST", mode: "no-cors",
        credentials: "include", headers: {{"Content-Type": "text/plain"}}, body: {spec!r}}})
        .then(() => document.title = "sent", () => document.title = "sent");
    </script>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = evil.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        page.goto(server.login_url())
        expect(page.get_by_test_id("conn-state")).to_have_text("connected")
        assert page.context.cookies(), "logged in"
        page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
        wait_js(page, "document.title === 'sent'", 10, "the other page's request went out")
    finally:
        other.shutdown()
        other.server_close()
    assert marker not in json.dumps(server.sessions()), "another page spawned a session"
    # The same request without a browser: with the cookie and a foreign or no Origin it is
    # refused (403, saying why); with the page's own Origin it is the page's and goes through.
    cookie = f"corral_token={server.token}"

    def post(origin):
        headers = {"content-type": "text/plain", "cookie": cookie}
        if origin:
            headers["origin"] = origin
        req = urllib.request.Request(
            server.url + "/v1/sessions", method="POST", data=spec.encode(), headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = post("http://127.0.0.1:1")
    assert status == 403 and "origin" in body["error"], (status, body)
    status, body = post(None)
    assert status == 403 and "Origin" in body["error"], (status, body)
    assert marker not in json.dumps(server.sessions())
    status, body = post(server.url)
    assert status == 201, (status, body)
    server.remove(body["id"])


def test_the_ttyd_token_endpoint_never_hands_out_the_login_cookie(server, page):
    # The cookie is HttpOnly so that no script can read the token; /ttyd/<id>/token gave it
    # back in a JSON body any script of the page could read. Now a cookie gets an empty
    # AuthToken (the ttyd WebSocket takes the cookie), and a bearer token gets itself back.
    s = server.spawn(["sleep", "600"], name="ttyd-token")
    req = urllib.request.Request(
        f"{server.url}/ttyd/{s['id']}/token", headers={"cookie": f"corral_token={server.token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.loads(r.read())
    assert body == {"token": ""}, body
    assert server.api("GET", f"/ttyd/{s['id']}/token") == {"token": server.token}
    server.remove(s["id"])
