"""What a system call costs right after a sleep: why the serve loop's host time is what it is here.

Usage: python bench/wake_cost.py [--rounds 1000] [--sleep-ms 4]

Each round sleeps as an engine step would (4 ms: the tiny model's step at 64 streams on this
VM), then times, back to back: two `getppid` calls (the cheapest system call), then two
`send_bytes` of a step-sized message (the pickled message the engine process sends after a
step) to a child process blocked in `recv_bytes`. The first of each pair pays for whatever
sleeping cost: cold caches and, for the first send, waking the reader. Prints median and p90 in
microseconds. CPU numbers from this machine; they say nothing about another.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import time
from multiprocessing.connection import Connection


def _reader(conn: Connection) -> None:
    while conn.recv_bytes() != b"x":
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--sleep-ms", type=float, default=4.0)
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_reader, args=(child,))
    proc.start()
    msg = pickle.dumps(("step", [(i, 7000 + i) for i in range(64)], [], [("step", (0.004,) * 9)],
                        5, 3), pickle.HIGHEST_PROTOCOL)
    times: dict[str, list[float]] = {k: [] for k in ("getppid, first", "getppid, second",
                                                     "send_bytes, first", "send_bytes, second")}
    for _ in range(args.rounds):
        time.sleep(args.sleep_ms / 1e3)
        t0 = time.perf_counter()
        os.getppid()
        t1 = time.perf_counter()
        os.getppid()
        t2 = time.perf_counter()
        parent.send_bytes(msg)
        t3 = time.perf_counter()
        parent.send_bytes(msg)
        t4 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[key].append(dt)
    parent.send_bytes(b"x")
    proc.join()
    print(f"after a {args.sleep_ms:g} ms sleep, {args.rounds} rounds; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'call':22s} {'median us':>10s} {'p90 us':>8s}")
    for key, values in times.items():
        values.sort()
        n = len(values)
        print(f"{key:22s} {values[n // 2] * 1e6:10.1f} {values[n * 9 // 10] * 1e6:8.1f}")


if __name__ == "__main__":
    main()
