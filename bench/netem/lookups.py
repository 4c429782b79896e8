#!/usr/bin/env python3
"""The client side of run.sh: announces, times lookups, prints the table.

Every HTTP call goes to a Grape's own API from inside that Grape's network namespace, so
the only lossy hop is the DHT traffic between namespaces. CLIENT=keepalive (the default):
each client thread moves itself into the namespace with setns(2) and keeps one HTTP/1.1
connection per Grape, timing each request from its first byte out to the reply's last byte
in; no process is started per call, so the harness itself takes little of the CPU the
Grapes share. CLIENT=curl: one `ip netns exec ... curl` per call, timed by curl
(`time_total`), as runs before 2026-12-07 (session 7) did; starting two processes per call
costs about 15 ms of CPU each, which on a 2-core box competes with the Grapes.

  lookups.py run KIND OUT.json   announce K names, time M lookups, write the samples
  lookups.py report A.json B.json ...   print the table (and ours/Node ratios)

Settings come from the environment run.sh exports (N, K, M, PAR, NS_PREFIX, SUBNET,
API_PORT, SCENARIO, DEAD, GRAPE_PIDS). Every loop is bounded: K announces, M lookups, each
curl capped by --max-time.

SCENARIO=churn: names announced through Grapes 3..5; then the Grapes listed in DEAD are
killed (SIGKILL, by their pids in GRAPE_PIDS: a crash, so they stay in every routing table)
and the lookups start at once, from live Grapes only.
SCENARIO=silent: two Grapes; every name announced through Grape 2 and looked up once from
Grape 1, while silent.py's fake nodes fill both routing tables.
SCENARIO=flood: as churn with nothing killed, in phases (PHASE=announce, then PHASE=lookup
once during flood.py's flood and once after it); PHASE=all (the default) does both.
"""
import ctypes
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

N = int(os.environ.get("N", "20"))
K = int(os.environ.get("K", "10"))
M = int(os.environ.get("M", "100"))
PAR = int(os.environ.get("PAR", "4"))
NS_PREFIX = os.environ.get("NS_PREFIX", "gr-netem-")
SUBNET = os.environ.get("SUBNET", "10.213.0")
API_PORT = int(os.environ.get("API_PORT", "30001"))
# Above our Grape's 30 s lookup timeout, so a slow lookup is measured, not cut off.
CURL_MAX = 40
# Grapes 3..5 announce (1-based); 1 and 2 are the bootstrap nodes, left to routing.
ANNOUNCERS = [3, 4, 5]
SCENARIO = os.environ.get("SCENARIO", "churn")
DEAD = [int(g) for g in os.environ.get("DEAD", "").split()]
GRAPE_PIDS = [int(p) for p in os.environ.get("GRAPE_PIDS", "").split()]
PHASE = os.environ.get("PHASE", "all")
CLIENT = os.environ.get("CLIENT", "keepalive")
CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL(None, use_errno=True)


def ip_of(g):
    return f"{SUBNET}.{10 + g}"


def enter_ns(g):
    """Moves the calling thread (only it) into Grape g's network namespace."""
    fd = os.open(f"/var/run/netns/{NS_PREFIX}{g}", os.O_RDONLY)
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {NS_PREFIX}{g}")
    finally:
        os.close(fd)


_conns = threading.local()


def call(g, cmd, data):
    """POSTs {"data": data} to Grape g's API from inside its namespace.

    Returns (seconds the call took, HTTP status, body)."""
    if CLIENT == "curl":
        return call_curl(g, cmd, data)
    conns = _conns.__dict__.setdefault("by_grape", {})
    body = json.dumps({"data": data})
    for attempt in (0, 1):
        conn = conns.get(g)
        if conn is None:
            # The socket stays in the namespace it was made in, wherever the thread goes.
            enter_ns(g)
            conn = http.client.HTTPConnection(ip_of(g), API_PORT, timeout=CURL_MAX)
            conn.connect()
            conns[g] = conn
        t0 = time.perf_counter()
        try:
            conn.request("POST", f"/{cmd}", body, {"content-type": "application/json"})
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
        except (http.client.RemoteDisconnected, ConnectionError) as e:
            # The server closed an idle kept-alive connection: open a new one, once.
            conn.close()
            del conns[g]
            if attempt:
                raise e
            continue
        return time.perf_counter() - t0, r.status, text


def call_curl(g, cmd, data):
    """[`call`] by one curl process per call, timed by curl itself."""
    out = subprocess.run(
        ["ip", "netns", "exec", f"{NS_PREFIX}{g}", "curl", "-s", "--max-time", str(CURL_MAX),
         "-X", "POST", "-H", "content-type: application/json",
         "-d", json.dumps({"data": data}),
         "-w", "\n%{time_total} %{http_code}",
         f"http://{ip_of(g)}:{API_PORT}/{cmd}"],
        capture_output=True, text=True, timeout=CURL_MAX + 10)
    body, _, tail = out.stdout.rpartition("\n")
    secs, _, code = tail.partition(" ")
    return float(secs or "nan"), int(code or 0), body


def name(k):
    return f"netem:svc:{k}"


def port(k):
    return 41000 + k


def announcer(k):
    if SCENARIO == "silent":
        return 2
    return ANNOUNCERS[k % len(ANNOUNCERS)]


def plan():
    """M lookups as (grape, name index): names interleaved, and each (grape, name) pair
    used at most once, so neither Grape answers from a cache of an earlier lookup (ours
    caches a reply for 1 s; Node merges what earlier lookups found)."""
    if SCENARIO == "silent":
        if M > K:
            sys.exit(f"SCENARIO=silent looks each name up once from Grape 1: M={M} > K={K}")
        return [(1, k) for k in range(M)]
    out = []
    for j in range(M):
        k, r = j % K, j // K
        others = [g for g in range(1, N + 1) if g != announcer(k) and g not in DEAD]
        if r >= len(others):
            sys.exit(f"M={M} needs more than {len(others)} Grapes per name")
        out.append((others[(k * 7 + r) % len(others)], k))
    return out


def run(kind, path):
    if PHASE in ("all", "announce"):
        announce()
    if PHASE in ("all", "lookup"):
        lookups(kind, path)


def announce():
    # Announce every name twice, 2 s apart (in parallel: a Node announce under loss takes
    # seconds); a real service re-announces every second or so, a lookup run of a minute
    # is well inside both Grapes' peer max age.
    with ThreadPoolExecutor(K) as ex:
        for _ in range(2):
            res = list(ex.map(lambda k: call(announcer(k), "announce", [name(k), port(k)]),
                              range(K)))
            bad = [r for r in res if r[1] != 200]
            print(f"  announce round: {K - len(bad)}/{K} ok, slowest {max(r[0] for r in res):.2f} s",
                  flush=True)
            time.sleep(2)
    time.sleep(3)


def lookups(kind, path):
    for g in DEAD:
        os.kill(GRAPE_PIDS[g - 1], signal.SIGKILL)
    if DEAD:
        print(f"  killed Grapes {DEAD} (SIGKILL); lookups start now", flush=True)

    def one(item):
        g, k = item
        secs, code, body = call(g, "lookup", name(k))
        try:
            peers = json.loads(body)
        except ValueError:
            peers = None
        ok = (code == 200 and isinstance(peers, list)
              and any(str(p).endswith(f":{port(k)}") for p in peers))
        return {"grape": g, "name": name(k), "secs": secs, "code": code, "ok": ok,
                "peers": peers if isinstance(peers, list) else body[:200]}

    t0 = time.monotonic()
    with ThreadPoolExecutor(PAR) as ex:
        samples = list(ex.map(one, plan()))
    wall = time.monotonic() - t0
    with open(path, "w") as f:
        json.dump({"kind": kind, "wall": wall, "par": PAR, "samples": samples}, f)
    okc = sum(s["ok"] for s in samples)
    print(f"  {kind}: {okc}/{len(samples)} lookups ok in {wall:.1f} s wall ({PAR} at a time)",
          flush=True)


def pct(xs, p):
    """Nearest-rank percentile of a sorted list."""
    if not xs:
        return float("nan")
    i = max(0, min(len(xs) - 1, -(-p * len(xs) // 100) - 1))
    return xs[i]


def report(paths):
    rows = {}
    print("| kind | lookups | success | p50 | p90 | p99 | max | mean |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        d = json.load(open(path))
        xs = sorted(s["secs"] for s in d["samples"])
        okc = sum(s["ok"] for s in d["samples"])
        r = {p: pct(xs, p) for p in (50, 90, 99, 100)}
        r["mean"] = sum(xs) / max(1, len(xs))
        rows[d["kind"]] = r
        print(f"| {d['kind']} | {len(xs)} | {100.0 * okc / max(1, len(xs)):.0f}% | "
              f"{r[50] * 1000:.0f} ms | {r[90] * 1000:.0f} ms | {r[99] * 1000:.0f} ms | "
              f"{r[100] * 1000:.0f} ms | {r['mean'] * 1000:.0f} ms |")
    if "ours" in rows and "node" in rows:
        for p in (50, 99, "mean"):
            label = f"p{p}" if p != "mean" else "mean"
            print(f"ours/Node {label}: {rows['ours'][p] / rows['node'][p]:.3f}")
    # Latency histogram, coarse: where the time goes (soft timeouts vs 2 s hard ones).
    edges = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 4.0, 1e9]
    labels = ["<10ms", "<50ms", "<100ms", "<250ms", "<500ms", "<1s", "<2s", "<2.5s", "<4s", ">=4s"]
    print()
    print("| kind | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for path in paths:
        d = json.load(open(path))
        counts = [0] * len(edges)
        for s in d["samples"]:
            counts[next(i for i, e in enumerate(edges) if s["secs"] < e)] += 1
        print(f"| {d['kind']} | " + " | ".join(str(c) for c in counts) + " |")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 3 and sys.argv[1] == "report":
        report(sys.argv[2:])
    else:
        sys.exit(__doc__)
