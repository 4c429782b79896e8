#!/usr/bin/env python3
"""What an open dashboard costs a Grape: CPU seconds of the grape process over a window
with a client polling GET /status every 2 s (as the page does) against the same window
with no client.

  python3 bench/dashboard_cost.py [PATH_TO_GRAPE]    # default target/release/grape

Starts one of our Grapes on 127.0.0.1, fills its routing table with NODES=400 fake DHT
nodes (UDP sockets in this process that ping the Grape once, then answer its queries, so
they turn good), announces NAMES=300 services through its API and looks each up, then
measures WINDOW=60 s idle and WINDOW s polled, in that order and again reversed
(ROUNDS=2), reading utime+stime from /proc/PID/stat. Also reports the /status body size
and the client-side time of one poll. The Grape is stopped by its pid at the end.
"""
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

NODES = int(os.environ.get("NODES", "400"))
NAMES = int(os.environ.get("NAMES", "300"))
WINDOW = float(os.environ.get("WINDOW", "60"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
POLL = 2.0
DHT, API = 23917, 33917
TICKS = os.sysconf("SC_CLK_TCK")


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(type(v))


def transaction_id(msg):
    """The `t` value of a bencoded KRPC message, found by scanning (enough for replies)."""
    at = msg.find(b"1:t")
    if at < 0:
        return None
    rest = msg[at + 3:]
    colon = rest.find(b":")
    try:
        n = int(rest[:colon])
    except ValueError:
        return None
    return rest[colon + 1:colon + 1 + n]


def random_in_bucket(own, prefix):
    """A random id sharing exactly `prefix` leading bits with `own`."""
    own_int = int.from_bytes(own, "big")
    rnd = random.getrandbits(160)
    flip = 1 << (159 - prefix)
    keep = ~((flip << 1) - 1) & ((1 << 160) - 1)
    value = (own_int & keep) | ((own_int ^ flip) & flip) | (rnd & (flip - 1))
    return value.to_bytes(20, "big")


class Swarm:
    """Fake DHT nodes: each pings the Grape once, then answers every query it gets."""

    def __init__(self, target, own, n):
        self.sel = selectors.DefaultSelector()
        self.stop = False
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            node_id = random_in_bucket(own, i % 12)
            self.sel.register(s, selectors.EVENT_READ, node_id)
            ping = {b"t": b"p%d" % i, b"y": b"q", b"q": b"ping", b"a": {b"id": node_id}}
            s.sendto(bencode(ping), target)
            time.sleep(0.002)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop:
            for key, _ in self.sel.select(timeout=0.2):
                try:
                    msg, src = key.fileobj.recvfrom(4096)
                except BlockingIOError:
                    continue
                if b"1:y1:q" not in msg:
                    continue
                t = transaction_id(msg)
                if t is None:
                    continue
                reply = {b"t": t, b"y": b"r", b"r": {b"id": key.data, b"nodes": b""}}
                if b"get_peers" in msg:
                    reply[b"r"][b"token"] = b"tok"
                key.fileobj.sendto(bencode(reply), src)

    def close(self):
        self.stop = True
        self.thread.join()
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def post(cmd, data):
    body = json.dumps({"data": data}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{API}/{cmd}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{API}{path}", timeout=10) as r:
        return r.read()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def window(pid, polled):
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    polls, took = 0, 0.0
    while time.monotonic() - start < WINDOW:
        if polled:
            t0 = time.monotonic()
            get("/status")
            took += time.monotonic() - t0
            polls += 1
        time.sleep(POLL - (time.monotonic() - start) % POLL)
    return cpu_seconds(pid) - start_cpu, polls, took


def main():
    grape = sys.argv[1] if len(sys.argv) > 1 else "target/release/grape"
    log = open("target/dashboard_cost.log", "w")
    proc = subprocess.Popen(
        [grape, "--dp", str(DHT), "--aph", str(API), "-b", "127.0.0.1", "--bn", ""],
        stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    try:
        for _ in range(100):
            try:
                status = json.loads(get("/status"))
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the Grape did not start")
        own = bytes.fromhex(status["id"])
        swarm = Swarm(("127.0.0.1", DHT), own, NODES)
        for i in range(NAMES):
            post("announce", [f"cost:svc-{i}", 10000 + i])
        for i in range(NAMES):
            post("lookup", f"cost:svc-{i}")
        time.sleep(5)
        status = get("/status")
        s = json.loads(status)
        print(f"routing table {s['routing']['nodes']} nodes "
              f"({len(s['routing']['ipv4']['buckets'])} buckets), "
              f"services {s['services']['total']}, lookups {s['lookups']['total']}, "
              f"stored keys {s['stored']['keys']['total']}; /status body {len(status)} bytes")
        results = {False: [], True: []}
        for r in range(ROUNDS):
            order = [False, True] if r % 2 == 0 else [True, False]
            for polled in order:
                cpu, polls, took = window(proc.pid, polled)
                results[polled].append((cpu, polls, took))
                label = "polled" if polled else "idle  "
                extra = f", {polls} polls, {1000 * took / max(polls, 1):.2f} ms per poll" if polled else ""
                print(f"{label}: {cpu:.2f} CPU s in {WINDOW:.0f} s{extra}", flush=True)
        idle = sum(c for c, _, _ in results[False]) / ROUNDS
        polled = sum(c for c, _, _ in results[True]) / ROUNDS
        polls = sum(p for _, p, _ in results[True]) / ROUNDS
        print(f"mean idle {idle:.2f} CPU s, polled {polled:.2f} CPU s per {WINDOW:.0f} s; "
              f"difference {polled - idle:+.2f} s = {100 * (polled - idle) / WINDOW:+.2f} % of a core, "
              f"{1000 * (polled - idle) / max(polls, 1):+.2f} ms per poll")
        swarm.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
