#!/usr/bin/env python3
"""The flooding host of run.sh (SCENARIO=flood), and what it checks around the flood.

  flood.py flood GRAPE_IP:PORT [...]       send TOTAL=200000 queries from PORTS=256 ports
  flood.py probe GRAPE_IP:PORT OUT.json    ping one Grape from another host meanwhile
  flood.py tables WORK KIND N              routing tables before and after, from /status

flood: runs in a namespace of its own (one host, one address). It sends TOTAL KRPC queries
round robin over PORTS UDP sockets (256 source ports of that address) and over the
Grapes, each with a fresh random node id, a third each `ping`, `find_node` and
`get_peers` for random targets: what a host that wants to fill routing tables with nodes
that never answer sends. Paced at RATE=10000 a second (20 s for the default TOTAL);
answers are read and dropped, and counted.

probe: runs in another Grape's namespace (another host). It pings the Grape every 20 ms
for DURATION=30 s from one socket with one node id, and writes how many of the pings were
answered within a second: are other hosts' queries still answered during the flood.

tables: reads WORK/KIND-{before,after}-I.status (each Grape's GET /status) and prints, per
Grape, how many of the other real Grapes its routing table holds, and how many nodes in all.
"""
import json
import os
import random
import select
import socket
import sys
import time

TOTAL = int(os.environ.get("TOTAL", "200000"))
PORTS = int(os.environ.get("PORTS", "256"))
RATE = float(os.environ.get("RATE", "10000"))
DURATION = float(os.environ.get("DURATION", "30"))
SUBNET = os.environ.get("SUBNET", "10.213.0")
random.seed(int(os.environ.get("SEED", "1")))


def query(method, tid, node_id):
    """A bencoded KRPC query; keys in sorted order, as bencode wants."""
    args = b"2:id20:" + node_id
    if method == b"find_node":
        args += b"6:target20:" + random.randbytes(20)
    elif method == b"get_peers":
        args += b"9:info_hash20:" + random.randbytes(20)
    return (b"d1:ad" + args + b"e1:q" + str(len(method)).encode() + b":" + method
            + b"1:t2:" + tid + b"1:y1:qe")


def addrs(args):
    out = []
    for arg in args:
        host, _, port = arg.rpartition(":")
        out.append((host, int(port)))
    if not out:
        sys.exit(__doc__)
    return out


def drain(socks):
    """Reads whatever waits on `socks`; returns how many KRPC responses were among it (the
    rest are the Grapes' own pings of the fake nodes, which go unanswered)."""
    n = 0
    ready, _, _ = select.select(socks, [], [], 0)
    for s in ready:
        try:
            while True:
                data, _ = s.recvfrom(4096)
                n += b"1:y1:r" in data
        except (BlockingIOError, ConnectionRefusedError):
            pass
    return n


def flood(grapes):
    socks = []
    for _ in range(PORTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.setblocking(False)
        socks.append(s)
    methods = [b"ping", b"find_node", b"get_peers"]
    # Built before the clock starts: the flooder shares the box's cores with the Grapes it
    # floods, and what it spends per datagram is taken from them.
    msgs = [query(methods[i % 3], (i % 65536).to_bytes(2, "big"), random.randbytes(20))
            for i in range(TOTAL)]
    t0 = time.monotonic()
    sent = answers = failed = 0
    batch = 100
    for i, msg in enumerate(msgs):
        s = socks[i % PORTS]
        g = grapes[(i // PORTS) % len(grapes)]
        try:
            s.sendto(msg, g)
            sent += 1
        except OSError:
            failed += 1
        if i % batch == batch - 1:
            answers += drain(socks)
            ahead = t0 + (i + 1) / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    time.sleep(1)
    answers += drain(socks)
    took = time.monotonic() - t0
    print(json.dumps({"sent": sent, "send_failed": failed, "answers": answers,
                      "ports": PORTS, "grapes": len(grapes), "seconds": round(took, 1)}),
          flush=True)


def probe(grape, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    node_id = random.randbytes(20)
    sent_at = {}
    answered = []
    end = time.monotonic() + DURATION
    n = 0
    while time.monotonic() < end:
        tid = (n % 65536).to_bytes(2, "big")
        sent_at[tid] = time.monotonic()
        s.sendto(query(b"ping", tid, node_id), grape)
        n += 1
        stop = time.monotonic() + 0.02
        while (left := stop - time.monotonic()) > 0:
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                break
            data, _ = s.recvfrom(4096)
            i = data.find(b"1:t2:")
            tid = data[i + 5:i + 7] if i >= 0 else b""
            if tid in sent_at and b"1:y1:r" in data:
                rtt = time.monotonic() - sent_at.pop(tid)
                if rtt <= 1.0:
                    answered.append(rtt)
    with open(out, "w") as f:
        json.dump({"sent": n, "answered": len(answered),
                   "p99_ms": sorted(answered)[int(0.99 * (len(answered) - 1))] * 1000
                   if answered else None}, f)


def tables(work, kind, n):
    real = {f"{SUBNET}.{10 + g}" for g in range(1, n + 1)}

    def held(path):
        try:
            with open(path) as f:
                st = json.load(f)
            addrs_ = [node["addr"].rpartition(":")[0]
                      for bucket in st["routing"]["ipv4"]["buckets"]
                      for node in bucket["nodes"]]
            return len(real & set(addrs_)), st["routing"]["nodes"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no file, or not our /status (a Node Grape has none)

    print("| Grape | real Grapes held before | after | nodes in table before | after |")
    print("|---:|---:|---:|---:|---:|")
    for g in range(1, n + 1):
        b = held(f"{work}/{kind}-before-{g}.status")
        a = held(f"{work}/{kind}-after-{g}.status")
        if b is None or a is None:
            print(f"| {g} | ? | ? | ? | ? |")
            continue
        print(f"| {g} | {b[0]} of {n - 1} | {a[0]} of {n - 1} | {b[1]} | {a[1]} |")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "flood":
        flood(addrs(sys.argv[2:]))
    elif len(sys.argv) == 4 and sys.argv[1] == "probe":
        probe(addrs(sys.argv[2:3])[0], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "tables":
        tables(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
