#!/usr/bin/env python3
"""Fills Grapes' routing tables with nodes that never answer, as NATed nodes do.

  silent.py GRAPE_IP:PORT [GRAPE_IP:PORT ...]

Run inside its own network namespace by run.sh (SCENARIO=silent). For each Grape it first
pings once to learn the Grape's node id, then, from S=300 UDP sockets of its own, sends one
`ping` query per socket with a node id that shares a prefix of 0..S/8 bits with that
Grape's id, so the fake nodes land in every bucket of the Grape's table rather than only in
the farthest one. Grapes answer and add the queriers to their tables; they ping them, as
BEP 5 says, and nothing ever answers: every socket reads and discards what comes in.
It repeats the queries every 20 s, so the fake nodes stay fresh in the tables, and stops
by itself after LIFETIME=600 s (or when run.sh kills it by pid).
"""
import os
import random
import select
import socket
import sys
import time

S = int(os.environ.get("S", "300"))
LIFETIME = float(os.environ.get("LIFETIME", "600"))
random.seed(int(os.environ.get("SEED", "1")))


def bencode_ping(tid, node_id):
    return b"d1:ad2:id20:" + node_id + b"e1:q4:ping1:t2:" + tid + b"1:y1:qe"


def own_id_of(addr):
    """Pings addr from a throwaway socket and returns the id in its answer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    try:
        for _ in range(10):
            s.sendto(bencode_ping(b"aa", random.randbytes(20)), addr)
            try:
                data, _ = s.recvfrom(2048)
            except socket.timeout:
                continue
            i = data.find(b"2:id20:")
            if i >= 0:
                return data[i + 7:i + 27]
        sys.exit(f"no answer from {addr}")
    finally:
        s.close()


def id_near(own, prefix_bits):
    """A random id that shares exactly prefix_bits leading bits with own."""
    n = int.from_bytes(own, "big")
    r = random.getrandbits(160)
    top = 160 - prefix_bits
    mask_keep = ((1 << 160) - 1) ^ ((1 << top) - 1)
    flip = 1 << (top - 1)
    v = (n & mask_keep) | (r & ((1 << top) - 1))
    v = (v & ~flip) | (~n & flip)
    return v.to_bytes(20, "big")


def main():
    grapes = []
    for arg in sys.argv[1:]:
        host, _, port = arg.rpartition(":")
        grapes.append((host, int(port)))
    if not grapes:
        sys.exit(__doc__)
    fakes = []  # (socket, {grape: id})
    ids = {g: own_id_of(g) for g in grapes}
    for i in range(S):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.setblocking(False)
        fakes.append((s, {g: id_near(ids[g], (i // 8) % 150) for g in grapes}))
    deadline = time.monotonic() + LIFETIME
    next_round = 0.0
    sent = 0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_round:
            for n, (s, per) in enumerate(fakes):
                for g in grapes:
                    try:
                        s.sendto(bencode_ping(n.to_bytes(2, "big"), per[g]), g)
                        sent += 1
                    except OSError:
                        pass
            print(f"silent.py: {sent} queries sent from {S} silent nodes", flush=True)
            next_round = now + 20
        ready, _, _ = select.select([s for s, _ in fakes], [], [], 0.5)
        for s in ready:
            try:
                while True:
                    s.recvfrom(4096)  # read and never answer
            except BlockingIOError:
                pass


if __name__ == "__main__":
    main()
