#!/usr/bin/env python3
"""The client side of run.sh's SCENARIO=gone: how long a withdrawn service stays findable.

  gone.py run KIND OUT.json      R trials of announce, withdraw, poll until gone; write them
  gone.py report A.json B.json   print the table

One trial: a fresh name and port are announced through Grape 3's API twice, 1 s apart (as a
server does), until a lookup on every Grape lists the port. Then the service is withdrawn:
with ours, `POST /unannounce` on Grape 3 (what a Rust RpcServer does on stop); the Node Grape
has no such call, so there the announces just stop and the peer expires by age. From the
moment of the withdraw every Grape is polled (one thread each, a lookup every POLL s) until
no Grape lists the port, then HOLD s more to see that it stays gone. Each trial is capped at
CAP s. Settings (environment): TRIALS=20, CAP=30, POLL=0.05, HOLD=1.5, plus N, NS_PREFIX,
SUBNET and API_PORT from run.sh (read through lookups.py).

A lookup is an HTTP call made from inside the Grape's own network namespace: each thread
moves itself there with setns(2) (it changes only the calling thread), so the 20 pollers
need no curl process per call.
"""
import json
import os
import sys
import threading
import time
import http.client

# The network run.sh made (N, namespaces, addresses) and the nearest-rank percentile.
from lookups import API_PORT, N, NS_PREFIX, SUBNET, enter_ns, pct

TRIALS = int(os.environ.get("TRIALS", "20"))
CAP = float(os.environ.get("CAP", "30"))
POLL = float(os.environ.get("POLL", "0.05"))
HOLD = float(os.environ.get("HOLD", "1.5"))
ANNOUNCER = 3
# How long to wait for every Grape to list a fresh announce before giving the trial up.
PRESENT_CAP = 60.0
HTTP_TIMEOUT = 40.0


def in_ns(g, fn):
    """Runs fn() on a new thread inside Grape g's namespace and returns its result."""
    out = {}

    def body():
        enter_ns(g)
        try:
            out["v"] = fn()
        except Exception as e:  # reported by the caller
            out["e"] = e
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["v"]


def post(g, cmd, data):
    """POSTs {"data": data} to Grape g's API (the caller is in g's namespace)."""
    conn = http.client.HTTPConnection(f"{SUBNET}.{10 + g}", API_PORT, timeout=HTTP_TIMEOUT)
    try:
        conn.request("POST", f"/{cmd}", json.dumps({"data": data}),
                     {"content-type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def lists(g, name, port):
    """Does a lookup of name on Grape g list port? None when the call failed."""
    try:
        code, body = post(g, "lookup", name)
        peers = json.loads(body)
    except (OSError, ValueError, http.client.HTTPException):
        return None
    if code != 200 or not isinstance(peers, list):
        return None
    return any(str(p).endswith(f":{port}") for p in peers)


def poll_all(name, port, until, t0, stop):
    """One thread per Grape, each doing a lookup every POLL s until stop is set or the
    deadline passes; returns per Grape a list of (start, end, listed), times from t0."""
    logs = {g: [] for g in range(1, N + 1)}

    def poller(g):
        enter_ns(g)
        while not stop.is_set() and time.monotonic() < until:
            s = time.monotonic()
            listed = lists(g, name, port)
            e = time.monotonic()
            logs[g].append((s - t0, e - t0, listed))
            time.sleep(max(0.0, s + POLL - time.monotonic()))
    threads = [threading.Thread(target=poller, args=(g,)) for g in logs]
    for t in threads:
        t.start()
    return logs, threads


def wait_present(name, port):
    """Seconds until a lookup on every Grape listed the port, or None (bounded)."""
    t0 = time.monotonic()
    found = set()
    lock = threading.Lock()
    done = threading.Event()

    def waiter(g):
        enter_ns(g)
        while not done.is_set() and time.monotonic() < t0 + PRESENT_CAP:
            if lists(g, name, port):
                with lock:
                    found.add(g)
                    if len(found) == N:
                        done.set()
                return
            time.sleep(0.2)
    threads = [threading.Thread(target=waiter, args=(g,)) for g in range(1, N + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0 if len(found) == N else None


def gone_at(log):
    """(last seen, gone): the start of the last lookup that listed the port, and the end of
    the first one after it that did not; gone is None if the last lookup still listed it."""
    last = max((i for i, r in enumerate(log) if r[2] is not False), default=-1)
    seen = log[last][0] if last >= 0 and log[last][2] else 0.0
    if last == len(log) - 1:
        return seen, None
    return seen, log[last + 1][1]


def trial(kind, t):
    name, port = f"gone:svc:{kind}:{t}:{os.getpid()}", 42000 + t
    for i in range(2):
        code, body = in_ns(ANNOUNCER, lambda: post(ANNOUNCER, "announce", [name, port]))
        if code != 200:
            print(f"  trial {t}: announce answered {code} {body[:100]}", flush=True)
        if i == 0:
            time.sleep(1)
    present = wait_present(name, port)
    if present is None:
        print(f"  trial {t}: not listed on every Grape within {PRESENT_CAP:.0f} s; skipped",
              flush=True)
        return {"trial": t, "present": None}
    stop = threading.Event()
    t0 = time.monotonic()
    logs, threads = poll_all(name, port, t0 + CAP, t0, stop)
    withdraw = None
    if kind == "ours":
        code, body = in_ns(ANNOUNCER, lambda: post(ANNOUNCER, "unannounce", [name, port]))
        withdraw = time.monotonic() - t0
        if code != 200:
            print(f"  trial {t}: unannounce answered {code} {body[:100]}", flush=True)
    # Gone everywhere once every Grape's latest lookup misses the port; then HOLD s more.
    gone_since = None
    while time.monotonic() < t0 + CAP:
        time.sleep(0.02)
        latest = [lg[-1][2] if lg else True for lg in logs.values()]
        if all(x is False for x in latest):
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since >= HOLD:
                break
        else:
            gone_since = None
    stop.set()
    for th in threads:
        th.join()
    per = {g: gone_at(lg) for g, lg in logs.items()}
    gone = [v[1] for v in per.values()]
    everywhere = max(gone) if all(x is not None for x in gone) else None
    failed = sum(1 for lg in logs.values() for r in lg if r[2] is None)
    lookups = sum(len(lg) for lg in logs.values())
    print(f"  trial {t}: listed everywhere after {present:.2f} s; gone everywhere "
          + (f"{everywhere:.3f} s" if everywhere is not None else f"NOT within {CAP:.0f} s")
          + f" after the withdraw (last seen {max(v[0] for v in per.values()):.3f} s; "
          + f"{lookups} lookups, {failed} failed"
          + (f"; unannounce took {withdraw * 1000:.0f} ms" if withdraw is not None else "")
          + ")", flush=True)
    return {"trial": t, "present": present, "withdraw": withdraw, "everywhere": everywhere,
            "last_seen": max(v[0] for v in per.values()),
            "per_grape": {g: v[1] for g, v in per.items()},
            "lookups": lookups, "failed": failed}


def run(kind, path):
    trials = [trial(kind, t) for t in range(TRIALS)]
    with open(path, "w") as f:
        json.dump({"kind": kind, "cap": CAP, "poll": POLL, "trials": trials}, f)


def report(paths):
    print("| kind | trials | gone within cap | p50 | p99 | max | per Grape p50 | per Grape p99 "
          "| lookups (failed) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        d = json.load(open(path))
        ts = [t for t in d["trials"] if t["present"] is not None]
        cap = d["cap"]
        # A trial not gone within the cap counts as the cap (a lower bound) in the percentiles.
        xs = sorted(t["everywhere"] if t["everywhere"] is not None else cap for t in ts)
        per = sorted(v if v is not None else cap for t in ts for v in t["per_grape"].values())
        gone = sum(t["everywhere"] is not None for t in ts)

        def secs(v):
            return f"> {cap:.0f} s" if v >= cap else f"{v:.3f} s"
        print(f"| {d['kind']} | {len(ts)}/{len(d['trials'])} | {gone}/{len(ts)} | "
              f"{secs(pct(xs, 50))} | {secs(pct(xs, 99))} | {secs(pct(xs, 100))} | "
              f"{secs(pct(per, 50))} | {secs(pct(per, 99))} | "
              f"{sum(t['lookups'] for t in ts)} ({sum(t['failed'] for t in ts)}) |")
    for path in paths:
        d = json.load(open(path))
        ws = sorted(t["withdraw"] for t in d["trials"] if t.get("withdraw") is not None)
        if ws:
            print(f"{d['kind']}: unannounce call p50 {pct(ws, 50) * 1000:.0f} ms, "
                  f"max {ws[-1] * 1000:.0f} ms")
        seen = sorted(t["last_seen"] for t in d["trials"] if t["present"] is not None)
        if seen:
            # The start of the last lookup that still listed the port: no lookup started later
            # listed it (a lower bound on "gone", where the table's times are upper bounds).
            print(f"{d['kind']}: last listed by a lookup started at p50 {pct(seen, 50):.3f} s, "
                  f"max {seen[-1]:.3f} s after the withdraw")
        print(f"{d['kind']}: gone everywhere per trial (s): "
              + " ".join(f"{t['everywhere']:.3f}" if t.get("everywhere") is not None else "capped"
                         for t in d["trials"] if t["present"] is not None))


if __name__ == "__main__":
    cmd, args = (sys.argv + [""])[1], sys.argv[2:]
    if cmd == "run" and len(args) == 2:
        run(*args)
    elif cmd == "report" and args:
        report(args)
    else:
        sys.exit(__doc__)
