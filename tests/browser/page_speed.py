#!/usr/bin/env python3
"""Speed of corral's web page under load (a measurement, not a test; not part of pytest).

    python3 tests/browser/page_speed.py [--samples 50] [--flood base64|yes] [--json FILE]

Against a real `corral serve` (temp data dir) and headless chromium (one browser context, one
tab per view, as a user would have them):

1. first-load transfer: the bytes of every request of a fresh page load with gzip (encoded body
   sizes as the network saw them, per request and summed);
2. baseline: 46 sessions exist (44 idle `cat`, the measured `cat`, a `cat` for the reference
   below; the 4 printing ones are not started yet), the list
   is open in one tab, and in another tab on a `cat` session we measure input-to-echo latency:
   from the key press (the keydown event's timestamp) to the moment xterm has parsed the echo
   (its write callback: `window.corral.nextOffset()` passing the echo, or `corral.flushed()`),
   also to the frame's arrival and to the next animation frame (xterm draws); 50 samples;
3. unwatched: 4 more sessions print as fast as they can (`sh -c 'stty raw -echo; cat /dev/urandom |
   base64'`, or `yes`), no tab on them yet; the same 50 samples;
4. loaded: the same 4 sessions each open in its own tab; the same 50 samples again.

Prints p50/p95/max of each run, how much output the 4 tabs digested, how many lag notices they
showed, and where the CPU went. For reference, each run also measures the echo of
another `cat` through a plain Python WebSocket client (no browser): the server's share.

Note: the browser runs with --disable-gpu, so xterm's WebGL renderer runs on SwiftShader (the CPU);
on a machine with a GPU drawing costs far less. On a 2-core machine the 4 printing sessions, the
server and 4 busy tabs compete for the same two cores, which dominates the loaded numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import string
import sys
import time

from playwright.sync_api import expect, sync_playwright

from corral_web import RawWs, Server, _children_map, launch_browser, wait_js

FLOODS = {
    "base64": ["sh", "-c", "stty raw -echo; cat /dev/urandom | base64"],
    "yes": ["sh", "-c", "stty raw -echo; exec yes"],
}

ECHO_PROBE = """
(() => {
  // When the browser created the key event (same clock as performance.now()).
  window.__lastKey = null;
  document.addEventListener('keydown', (e) => { window.__lastKey = e.timeStamp; }, true);
  // Event-driven, no polling (a polling loop on the page's thread delays the very frames it
  // waits for). The page's socket is wrapped so that right after the page's own onmessage
  // handler ran for a frame we know whether xterm already parsed it: after user input xterm
  // parses the next write synchronously, and its write callback sets corral.nextOffset();
  // otherwise corral.flushed() tells when it did. `drawn` is the next animation frame, in
  // which xterm's renderer draws (xterm's render callback was queued before ours).
  window.__echo = null;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      let handler = null;
      Object.defineProperty(this, 'onmessage', { configurable: true, get: () => handler, set: (fn) => { handler = fn; } });
      this.addEventListener('message', (e) => {
        const arrived = performance.now();
        if (handler) handler.call(this, e);
        const w = window.__echo;
        if (!w || typeof e.data === 'string' || window.corral.receivedOffset() <= w.before) return;
        window.__echo = null;
        const done = (parsed) =>
          requestAnimationFrame(() => w.resolve({ arrived, parsed, drawn: performance.now() }));
        if (window.corral.nextOffset() > w.before) done(performance.now());
        else window.corral.flushed().then(() => done(performance.now()));
      });
    }
  };
  window.__waitEcho = (before) => new Promise((resolve) => { window.__echo = { before, resolve }; });
})();
"""


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs: list[float]) -> str:
    return f"p50 {pct(xs, 50):6.1f} ms   p95 {pct(xs, 95):6.1f} ms   max {max(xs):6.1f} ms   (n={len(xs)})"


def measure_echo(page, samples: int) -> dict:
    out = {"arrived": [], "parsed": [], "drawn": []}
    typed = ""
    for i in range(samples):
        ch = string.ascii_lowercase[i % 26]
        before = page.evaluate("window.corral.receivedOffset()")
        page.evaluate("(b) => { window.__lastKey = null; window.__p = window.__waitEcho(b); }", before)
        page.keyboard.press(ch)
        typed += ch
        r = page.evaluate("async () => { const r = await window.__p; return { ...r, key: window.__lastKey }; }")
        assert r["key"] is not None, "the keydown was not seen"
        for k in out:
            out[k].append(r[k] - r["key"])
        time.sleep(random.uniform(0.03, 0.08))
    # The echoes are really there, in order.
    wait_js(page, f"window.corral.termText().includes({typed!r})", 10, "all echoes on screen")
    page.keyboard.press("Enter")
    return out


def cpu_times(server_pid: int) -> dict:
    """CPU seconds so far: the server itself, its sessions' processes, chromium, the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    kids = _children_map()
    sessions: set[int] = set()
    todo = [server_pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in sessions:
                sessions.add(c)
                todo.append(c)
    out = {"server": 0.0, "sessions": 0.0, "chromium": 0.0}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        f = stat[stat.rfind(")") + 2 :].split()
        t = (int(f[11]) + int(f[12])) / tick
        pid = int(d)
        if pid == server_pid:
            out["server"] += t
        elif pid in sessions:
            out["sessions"] += t
        elif comm.startswith(("chromium", "chrome")):
            out["chromium"] += t
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    out["machine"] = (sum(cpu) - cpu[3] - cpu[4]) / tick  # all but idle and iowait
    return out


class NativeEcho:
    """Echo latency of a `cat` session through a plain WebSocket client: the server's share."""

    def __init__(self, server: Server, session: dict):
        self.ws = RawWs(server)
        self.ws.request({"type": "hello", "protocol": 1})
        self.channel = self.ws.request({"type": "subscribe", "session": session["id"], "from": 0})["channel"]
        self.head = 0  # offset after the last byte received

    def _frame(self) -> None:
        while True:
            r = self.ws.recv()
            if r[0] == "binary" and r[1] == 1 and r[2] == self.channel:
                self.head = max(self.head, r[3] + len(r[4]))
                return

    def measure(self, samples: int) -> list[float]:
        out = []
        start = self.head
        for i in range(samples):
            want = self.head + 1  # cat's tty echoes each key: one byte
            t = time.perf_counter()
            self.ws.input(self.channel, string.ascii_lowercase[i % 26].encode())
            while self.head < want:
                self._frame()
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(random.uniform(0.03, 0.08))
        # Enter: "\r\n" echoed, then cat's copy of the line and "\r\n"; read it all, so that no
        # stale frame is taken for the next run's first echo.
        self.ws.input(self.channel, b"\n")
        while self.head < start + 2 * samples + 4:
            self._frame()
        return out


def first_load(browser, server: Server) -> dict:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    done = []
    page.on("requestfinished", lambda r: done.append(r))
    page.goto(server.login_url())
    expect(page.get_by_test_id("session-row").first).to_be_visible(timeout=20_000)
    page.wait_for_load_state("networkidle")
    rows = []
    for r in done:
        resp = r.response()
        sizes = r.sizes()
        rows.append(
            {
                "method": r.method,
                "url": r.url.replace(server.url, "").split("?token=")[0],
                "status": resp.status if resp else None,
                "encoding": (resp.headers.get("content-encoding") if resp else None) or "-",
                "body": sizes["responseBodySize"],
                "headers": sizes["responseHeadersSize"],
            }
        )
    ctx.close()
    return {"requests": rows, "body_total": sum(x["body"] for x in rows), "headers_total": sum(x["headers"] for x in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--flood", choices=sorted(FLOODS), default="base64")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of flooding before measuring")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()

    load_start = os.getloadavg()[0]
    server = Server().start()
    try:
        for i in range(44):
            server.spawn(["cat"], name=f"idle-{i + 1:02d}")
        echo = server.spawn(["cat"], name="echo")
        native = NativeEcho(server, server.spawn(["cat"], name="echo-cli"))
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                load = first_load(browser, server)
                ctx = browser.new_context(viewport={"width": 1280, "height": 800})
                ctx.set_default_timeout(30_000)
                listing = ctx.new_page()
                listing.goto(server.login_url())
                expect(listing.get_by_test_id("session-row")).to_have_count(46, timeout=30_000)

                meter = ctx.new_page()
                meter.add_init_script(ECHO_PROBE)
                meter.goto(f"{server.url}/#/s/{echo['id']}")
                wait_js(meter, "window.corral.connState() === 'connected' && window.corral.sessionId() !== null", 20)
                meter.get_by_test_id("terminal").click()
                meter.wait_for_timeout(500)
                base = measure_echo(meter, args.samples)
                base["native"] = native.measure(args.samples)

                floods = [server.spawn(FLOODS[args.flood], name=f"flood-{i + 1}") for i in range(4)]
                expect(listing.get_by_test_id("session-row")).to_have_count(50, timeout=30_000)
                # The sessions printing, no tab on them yet: what the server and the printing
                # processes alone cost the echo.
                time.sleep(args.warmup)
                meter.bring_to_front()
                meter.get_by_test_id("terminal").click()
                unwatched = measure_echo(meter, args.samples)
                unwatched["native"] = native.measure(args.samples)
                tabs = []
                for f in floods:
                    t = ctx.new_page()
                    t.goto(f"{server.url}/#/s/{f['id']}")
                    tabs.append(t)
                for t in tabs:
                    wait_js(t, "window.corral.receivedOffset() > 100000", 30, "a flood tab to receive output")
                time.sleep(args.warmup)
                meter.bring_to_front()
                meter.get_by_test_id("terminal").click()
                got0 = [t.evaluate("window.corral.nextOffset()") for t in tabs]
                lags0 = [len(t.evaluate("window.corral.lags()")) for t in tabs]
                head0 = [server.session(f["id"])["output_offset"] for f in floods]
                t0 = time.monotonic()
                cpu0 = cpu_times(server.proc.pid)
                loaded = measure_echo(meter, args.samples)
                dt = time.monotonic() - t0
                cpu1 = cpu_times(server.proc.pid)
                cpu = {k: (cpu1[k] - cpu0[k]) / dt * 100 for k in cpu0}
                got1 = [t.evaluate("window.corral.nextOffset()") for t in tabs]
                head1 = [server.session(f["id"])["output_offset"] for f in floods]
                all_lags = [t.evaluate("window.corral.lags()") for t in tabs]
                lags = [len(l) - n for l, n in zip(all_lags, lags0)]
                skipped = sum(b - a for l, n in zip(all_lags, lags0) for a, b in l[n:])
                loaded["native"] = native.measure(args.samples)
                vis = [t.evaluate("document.visibilityState") for t in tabs]
                digested = (sum(b - a for a, b in zip(got0, got1)) - skipped) / dt / 2**20
                produced = sum(b - a for a, b in zip(head0, head1)) / dt / 2**20
                for f in floods:
                    server.api("POST", f"/v1/sessions/{f['id']}/stop", {"grace": 1})
            finally:
                browser.close()
    finally:
        server.stop()

    print("first load (fresh cache, Accept-Encoding: gzip):")
    for r in load["requests"]:
        print(f"  {r['method']:4} {r['url'][:48]:48} {r['status']}  {r['encoding']:5} {r['body']:8d} B body  {r['headers']:5d} B headers")
    print(f"  total: {load['body_total']} B of bodies ({load['body_total'] / 1024:.1f} KiB), "
          f"{load['body_total'] + load['headers_total']} B with headers, {len(load['requests'])} requests")
    print()
    runs = [
        ("baseline: 46 idle sessions, list tab open, nothing printing", base),
        (f"50 sessions, 4 printing flat out ({args.flood}), no tab on them", unwatched),
        (f"50 sessions, 4 printing flat out ({args.flood}), each open in a tab", loaded),
    ]
    for title, what in (
        ("key press -> echo parsed by xterm (its write callback)", "parsed"),
        ("key press -> echo frame received by the page", "arrived"),
        ("key press -> next animation frame after the parse (xterm draws)", "drawn"),
        ("reference without a browser: input frame sent -> echo frame received, Python WebSocket client on another cat", "native"),
    ):
        print(f"input-to-echo latency, {title}, {args.samples} samples each:")
        for name, run in runs:
            print(f"  {summary(run[what])}   {name}")
    print(f"  load average (1 min) at the start {load_start:.2f}, at the end {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print(f"during the loaded run the 4 sessions wrote {produced:.1f} MiB/s and the 4 tabs parsed {digested:.1f} MiB/s "
          f"(the rest skipped: lag notices per tab during the run {lags}; tabs {vis})")
    print(f"CPU during the loaded run (100% = one core of {os.cpu_count()}): corral server {cpu['server']:.0f}%, "
          f"session processes {cpu['sessions']:.0f}%, chromium (all processes) {cpu['chromium']:.0f}%, "
          f"whole machine {cpu['machine']:.0f}% (the rest is other work on the machine)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"first_load": load, "baseline": base, "unwatched": unwatched, "loaded": loaded, "lags": lags, "cpu": cpu,
                       "produced_mib_s": produced, "digested_mib_s": digested}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
