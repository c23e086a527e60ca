#!/usr/bin/env python3
"""Speed of corral's web page under load (a measurement, not a test; not part of pytest).

    python3 tests/browser/page_speed.py [--samples 50] [--flood base64|yes] [--json FILE]

Against a real `corral serve` (temp data dir) and headless chromium (one browser context, one
tab per view, as a user would have them):

1. first-load transfer: the bytes of every request of a fresh page load with gzip (encoded body
   sizes as the network saw them, per request and summed);
2. baseline: 50 sessions exist (45 idle `cat`, the measured `cat`, 4 not started yet), the list
   is open in one tab, and in another tab on a `cat` session we measure input-to-echo latency:
   from the key press (the keydown event's timestamp) to the moment xterm has parsed the echo
   (`window.corral.flushed()` resolving after the echo's frame arrived); 50 samples;
3. unwatched: 4 more sessions print as fast as they can (`sh -c 'stty raw -echo; cat /dev/urandom |
   base64'`, or `yes`), no tab on them yet; the same 50 samples;
4. loaded: the same 4 sessions each open in its own tab; the same 50 samples again.

Prints p50/p95/max of each run (and the frame-arrival part alone), how much output the 4 tabs
digested, and how many lag notices they showed.
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

from corral_web import Server, launch_browser, wait_js, wait_until

FLOODS = {
    "base64": ["sh", "-c", "stty raw -echo; cat /dev/urandom | base64"],
    "yes": ["sh", "-c", "stty raw -echo; exec yes"],
}

ECHO_PROBE = """
(() => {
  window.__lastKey = null;
  document.addEventListener('keydown', (e) => { window.__lastKey = e.timeStamp; }, true);
  // Resolves once output past `before` arrived and xterm parsed it: {arrived, flushed} in
  // performance.now() time. Polls the received offset through a MessageChannel (no 4 ms clamp).
  window.__waitEcho = (before) => new Promise((resolve) => {
    const ch = new MessageChannel();
    const check = () => {
      if (window.corral.receivedOffset() > before) {
        const arrived = performance.now();
        window.corral.flushed().then(() => resolve({ arrived, flushed: performance.now() }));
      } else {
        ch.port2.postMessage(0);
      }
    };
    ch.port1.onmessage = check;
    check();
  });
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
    flushed, arrived = [], []
    typed = ""
    for i in range(samples):
        ch = string.ascii_lowercase[i % 26]
        before = page.evaluate("window.corral.receivedOffset()")
        page.evaluate("(b) => { window.__lastKey = null; window.__p = window.__waitEcho(b); }", before)
        page.keyboard.press(ch)
        typed += ch
        r = page.evaluate("async () => { const r = await window.__p; return { ...r, key: window.__lastKey }; }")
        assert r["key"] is not None, "the keydown was not seen"
        flushed.append(r["flushed"] - r["key"])
        arrived.append(r["arrived"] - r["key"])
        time.sleep(random.uniform(0.03, 0.08))
    # The echoes are really there, in order.
    wait_js(page, f"window.corral.termText().includes({typed!r})", 10, "all echoes on screen")
    page.keyboard.press("Enter")
    return {"flushed": flushed, "arrived": arrived}


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
        for i in range(45):
            server.spawn(["cat"], name=f"idle-{i + 1:02d}")
        echo = server.spawn(["cat"], name="echo")
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

                floods = [server.spawn(FLOODS[args.flood], name=f"flood-{i + 1}") for i in range(4)]
                expect(listing.get_by_test_id("session-row")).to_have_count(50, timeout=30_000)
                # The sessions printing, no tab on them yet: what the server and the printing
                # processes alone cost the echo.
                time.sleep(args.warmup)
                meter.bring_to_front()
                meter.get_by_test_id("terminal").click()
                unwatched = measure_echo(meter, args.samples)
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
                head0 = [server.session(f["id"])["output_offset"] for f in floods]
                t0 = time.monotonic()
                loaded = measure_echo(meter, args.samples)
                dt = time.monotonic() - t0
                got1 = [t.evaluate("window.corral.nextOffset()") for t in tabs]
                head1 = [server.session(f["id"])["output_offset"] for f in floods]
                lags = [len(t.evaluate("window.corral.lags()")) for t in tabs]
                vis = [t.evaluate("document.visibilityState") for t in tabs]
                digested = sum(b - a for a, b in zip(got0, got1)) / dt / 2**20
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
    print(f"input-to-echo latency, key press -> echo parsed by xterm ({args.samples} samples each):")
    print(f"  baseline (50 sessions, list tab, nothing printing): {summary(base['flushed'])}")
    print(f"  4 sessions printing flat out ({args.flood}), no tab on them: {summary(unwatched['flushed'])}")
    print(f"  4 tabs on sessions printing flat out ({args.flood}):   {summary(loaded['flushed'])}")
    print("  of which key press -> echo frame received:")
    print(f"    baseline:  {summary(base['arrived'])}")
    print(f"    unwatched: {summary(unwatched['arrived'])}")
    print(f"    loaded:    {summary(loaded['arrived'])}")
    print(f"  load average (1 min) at the start {load_start:.2f}, at the end {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print(f"  during the loaded run the 4 sessions wrote {produced:.1f} MiB/s and the 4 tabs parsed {digested:.1f} MiB/s; "
          f"lag notices per tab: {lags}; tabs {vis}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"first_load": load, "baseline": base, "unwatched": unwatched, "loaded": loaded, "lags": lags,
                       "produced_mib_s": produced, "digested_mib_s": digested}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
