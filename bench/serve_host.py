"""The serve engine process's host work per step, with the engine step replaced by a 4 ms sleep.

Usage: python bench/serve_host.py [STREAMS=64] [REQUESTS=1024]
       HTIME=FILE python bench/serve_host.py ...   (also write per-method wall time per step)
       HPROF=FILE python bench/serve_host.py ...   (also write a cProfile of the child)
       BUSY=1 ...   (the step spins on the core instead of sleeping, as a CPU engine's does)
       PIN=1 ...    (the engine process alone on one CPU, this process on another)

`batchsim serve`'s engine process (serve.engine_process, the tiny test model's policy and
sizes) with `PlanRunner.run` replaced by a sleep that stands for a GPU step (it releases the
core as a device wait would), and one token per decode and per finished prefill. The parent
plays N closed-loop clients of 32 + 64 tokens through `EngineProcess`, without HTTP. Prints the
engine loop's host wall time, CPU time and run-queue wait per step (its LiveStats) and own time
(host minus run-queue) as a share of the step. CPU numbers from this machine.
"""
import collections
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = os.environ.get("ROOT", str(Path(__file__).resolve().parent.parent))  # the tree to measure
sys.path.insert(0, ROOT)
from serve_load import closed_loop  # noqa: E402  (bench/ is the script's directory)

from batchsim.serve import engine_process as ep  # noqa: E402

STEP_S = 0.004
BUSY = bool(os.environ.get("BUSY"))
PIN = bool(os.environ.get("PIN"))
TIMED = {"EngineLoop": ("_deliver", "_flush", "_take_inbox", "_counts", "_started",
                        "_retry_aborts"),
         "Server": ("decide", "end", "begin"), "HostClock": ("read", "runqueue_s", "cpu_s"),
         "_Channel": ("post", "receive", "send")}


def _fake_build(real: Any) -> Any:
    from batchsim.profiler.real.plan_runner import PlanRunner, StepOutput

    class Fake(PlanRunner):
        def run(self, plan: Any) -> Any:
            t0 = time.perf_counter()
            tokens = {r.index: 7 for r in plan.decodes}
            for c in plan.prefills:
                if c.start + c.num_tokens >= c.request.input_tokens:
                    tokens[c.request.index] = 7
            if BUSY:
                while time.perf_counter() - t0 < STEP_S:
                    pass
            else:
                time.sleep(STEP_S)
            return StepOutput(tokens, time.perf_counter() - t0, None)  # type: ignore[arg-type]

    def build(spec: Any) -> Any:
        served = real(spec)
        served.runner = Fake(None, None)
        return served

    return build


def _time_methods(path: str) -> Any:
    """Wrap the loop's methods with wall-time counters; returns the function that writes them."""
    from batchsim.serve import engine_loop, host_clock
    from batchsim.sim import server

    owners = {"EngineLoop": engine_loop.EngineLoop, "Server": server.Server,
              "HostClock": host_clock.HostClock, "_Channel": ep._Channel}
    acc: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def wrap(cls: Any, name: str) -> None:
        f = getattr(cls, name)

        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[name] += time.perf_counter() - t
                calls[name] += 1

        setattr(cls, name, timed)

    for owner, names in TIMED.items():
        for name in names:
            wrap(owners[owner], name)

    def dump() -> None:
        steps = max(calls["end"], 1)  # Server.end: once per step
        with open(path, "w") as f:
            for k in sorted(acc, key=acc.__getitem__, reverse=True):
                f.write(f"{k:16s} {acc[k] / steps * 1e6:8.1f} us/step  calls {calls[k]}\n")

    return dump


def child_main(spec: Any, ends: Any, level: int = 30, fmt: str | None = None,
               num_sent: Any = None) -> None:
    import batchsim.serve.builder as builder

    if PIN:  # the CPU the parent chose (this process inherited the parent's own by then)
        os.sched_setaffinity(0, {int(os.environ["SERVE_HOST_ENGINE_CPU"])})
    builder.build_served = _fake_build(builder.build_served)
    if os.environ.get("HTIME"):
        dump = _time_methods(os.environ["HTIME"])
        try:
            ep.engine_main(spec, ends, level, fmt, num_sent)
        finally:
            dump()
    elif os.environ.get("HPROF"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
        try:
            ep.engine_main(spec, ends, level, fmt, num_sent)
        finally:
            profile.disable()
            profile.dump_stats(os.environ["HPROF"])
    else:
        ep.engine_main(spec, ends, level, fmt, num_sent)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    from batchsim.serve.builder import ServeSpec
    from batchsim.serve.live_stats import LiveStats
    from batchsim.serve.protocol import GenerationRequest

    ep.engine_main = child_main  # type: ignore[assignment]  # what the spawned child runs
    if PIN:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("PIN=1 needs two CPUs")
        os.environ["SERVE_HOST_ENGINE_CPU"] = str(cpus[-1])  # read by the spawned child
        os.sched_setaffinity(0, {cpus[0]})
    proc = ep.EngineProcess(ServeSpec("continuous", {"max_num_seqs": str(n)},
                                      model="tiny-qwen2"))
    proc.boot()
    stats = LiveStats("fake")
    gen = GenerationRequest("completion", [1] * 32, 64, 64, True, True, True, 0)
    proc.attach(stats, lambda batch: batch.deliver())
    proc.start()
    wall = closed_loop(proc.submit, gen, n, total)
    proc.drain(0)
    proc.join(30)
    st = stats.steps
    print(f"{ROOT}: streams {n}, {st} steps of {stats.busy_s / st * 1e3:.3f} ms; per step: host "
          f"{stats.host_s / st * 1e6:.1f} us, CPU {stats.host_cpu_s / st * 1e6:.1f} us, run "
          f"queue {stats.host_runqueue_s / st * 1e6:.1f} us; own "
          f"{(stats.host_s - stats.host_runqueue_s) / stats.busy_s * 100:.2f}% of the step; "
          f"{wall:.2f} s")


if __name__ == "__main__":
    main()
