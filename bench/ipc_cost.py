"""What one step message costs to send to a process blocked reading it, three ways.

Usage: python bench/ipc_cost.py [--rounds 500] [--step-ms 4]

The engine process (serve.engine_process) sends one message per step to the HTTP process, whose
reader thread is blocked waiting for it. Here a sender pinned to one CPU spins for a step's
length (as an engine step keeps its core busy), then sends a step-sized pickled message to a
reader pinned to another CPU, each round by each of: `Connection.send_bytes` over a Unix socket
pair (`multiprocessing.Pipe()`), the same over a one-way pipe (`Pipe(duplex=False)`), and one
`os.write` of a length-prefixed frame to a one-way pipe (`FramedPipe.send`). The order rotates
each round. Prints median, p90 and mean microseconds of the send. CPU numbers from this
machine; they say nothing about another.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import select
import statistics
import struct
import time
from multiprocessing.connection import Connection

WAYS = ("socket pair, send_bytes", "one-way pipe, send_bytes", "one-way pipe, one os.write")


def _reader(conns: list[Connection], cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    poller = select.poll()
    by_fd = {c.fileno(): c for c in conns}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    ends = 0
    buffered = b""
    while ends < len(conns):
        for fd, _ in poller.poll():
            conn = by_fd[fd]
            if conn is conns[0]:
                ends += conn.recv_bytes() == b"x"
                continue
            buffered += os.read(fd, 1 << 16)  # the pipe carries both framings: count the ends
            while len(buffered) >= 4:
                (size,) = struct.unpack_from("!i", buffered)
                if len(buffered) < 4 + size:
                    break
                ends += buffered[4:4 + size] == b"x"
                buffered = buffered[4 + size:]


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=500)
    p.add_argument("--step-ms", type=float, default=4.0)
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("ipc_cost.py needs two CPUs")
    os.sched_setaffinity(0, {cpus[-1]})
    ctx = mp.get_context("spawn")
    sock_a, sock_b = ctx.Pipe()
    pipe_r, pipe_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_reader, args=([sock_b, pipe_r], cpus[0]))
    proc.start()
    msg = pickle.dumps(("step", list(range(64)), list(range(7000, 7064)), [],
                        [("step", (0.004,) * 9)], 5, 3), pickle.HIGHEST_PROTOCOL)
    frame = struct.pack("!i", len(msg)) + msg
    times: dict[str, list[float]] = {w: [] for w in WAYS}
    for r in range(args.rounds):
        for way in WAYS[r % 3:] + WAYS[:r % 3]:
            _spin(args.step_ms / 1e3)
            t0 = time.perf_counter()
            if way == WAYS[0]:
                sock_a.send_bytes(msg)
            elif way == WAYS[1]:
                pipe_w.send_bytes(msg)
            else:
                os.write(pipe_w.fileno(), frame)
            times[way].append(time.perf_counter() - t0)
    sock_a.send_bytes(b"x")
    pipe_w.send_bytes(b"x")
    proc.join(30)
    print(f"a {len(msg)}-byte message after a {args.step_ms:g} ms spin, {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'way':28s} {'median us':>10s} {'p90 us':>8s} {'mean us':>8s}")
    for way, values in times.items():
        values.sort()
        print(f"{way:28s} {values[len(values) // 2] * 1e6:10.1f} "
              f"{values[int(len(values) * 0.9)] * 1e6:8.1f} {statistics.mean(values) * 1e6:8.1f}")


if __name__ == "__main__":
    main()
