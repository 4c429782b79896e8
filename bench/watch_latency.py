#!/usr/bin/env python3
"""How fast a watch on one Grape sees an announce, then an unannounce, made on another.

  python3 bench/watch_latency.py [PATH_TO_GRAPE]    # default target/release/grape

Starts N=20 of our Grapes on 127.0.0.1 (DHT ports 21001.., API ports 31001..; Grapes 2..N
bootstrap from Grape 1), lets them settle, then runs TRIALS=20 trials: a fresh name; a
blocking `GET /watch?name=..&index=..&wait=10s` on a random Grape W; an announce of the
name through another random Grape A; the time from the announce's request to the watch's
answer listing the port. Then the same for `POST /unannounce` on A and an answer without
the port. Prints p50/p99/max of both. Every Grape is stopped by its pid at the end; every
wait is bounded (curl-less: urllib with timeouts).
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

N = int(os.environ.get("N", "20"))
TRIALS = int(os.environ.get("TRIALS", "20"))
SETTLE = float(os.environ.get("SETTLE", "8"))
DHT0, API0 = 21000, 31000


def api(g):
    return f"http://127.0.0.1:{API0 + g}"


def post(g, cmd, data, timeout=10):
    body = json.dumps({"data": data}).encode()
    req = urllib.request.Request(f"{api(g)}/{cmd}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def watch(g, name, index, wait="10s"):
    url = f"{api(g)}/watch?name={name}&index={index}&wait={wait}"
    with urllib.request.urlopen(url, timeout=15) as r:
        return json.loads(r.read())


def timed_change(w, name, index, act, want):
    """Starts a blocking watch on w, runs act(), returns seconds from act to the answer
    whose peers satisfy want(peers), and the new index."""
    out = {}

    def run():
        i = index
        while True:
            got = watch(w, name, i)
            if want(got["peers"]):
                out["at"] = time.monotonic()
                out["index"] = got["index"]
                return
            if got["index"] == i and time.monotonic() - out.get("t0", time.monotonic()) > 10:
                return
            i = got["index"]

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.05)  # the watch is registered before the change
    out["t0"] = time.monotonic()
    act()
    t.join(timeout=15)
    if "at" not in out:
        return None, index
    return out["at"] - out["t0"], out["index"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, -(-p * len(xs) // 100) - 1))]


def main():
    grape = sys.argv[1] if len(sys.argv) > 1 else "target/release/grape"
    procs = []
    try:
        for g in range(1, N + 1):
            boot = "" if g == 1 else f"127.0.0.1:{DHT0 + 1}"
            cmd = [grape, "-b", "127.0.0.1", "--dp", str(DHT0 + g), "--aph", str(API0 + g),
                   "--bn", boot]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        time.sleep(SETTLE)
        rng = random.Random(1)
        ups, downs, missed = [], [], 0
        for t in range(TRIALS):
            name = f"watch-bench-{t}-{rng.getrandbits(32):08x}"
            port = 42000 + t
            w, a = rng.sample(range(1, N + 1), 2)
            index = watch(w, name, 0)["index"]
            listed = lambda peers: any(p.endswith(f":{port}") for p in peers)
            up, index = timed_change(w, name, index,
                                     lambda: post(a, "announce", [name, port]), listed)
            down, _ = timed_change(w, name, index,
                                   lambda: post(a, "unannounce", [name, port]),
                                   lambda peers: not listed(peers))
            if up is None or down is None:
                missed += 1
            if up is not None:
                ups.append(up)
            if down is not None:
                downs.append(down)
        print(f"{N} Grapes on loopback, {TRIALS} trials, watcher and announcer on different Grapes")
        for label, xs in (("announce", ups), ("unannounce", downs)):
            if xs:
                print(f"  {label:10} seen by the watch: p50 {pct(xs, 50) * 1000:.0f} ms, "
                      f"p99 {pct(xs, 99) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms "
                      f"({len(xs)} of {TRIALS})")
        print(f"  trials where a change was not seen within 10 s: {missed}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
