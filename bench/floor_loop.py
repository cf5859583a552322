"""The event loop's floor: plain Python with continuous's rules and costs, against batchsim's.

Usage: python bench/floor_loop.py [--rounds 3] [--num-requests 1000000] [--only azure|1m]

`floor_run` below is a tight loop (no SimPy, no policy objects, no recorder) that applies the
continuous policy's scheduling rules under its default knobs (vLLM 0.33 behaviours: FCFS,
chunked prefill with the full token budget, admission only when blocks for the whole prompt
are free, async scheduling: an arrival first runs two steps later and a finished request holds
its seat and blocks through one more schedule call) and prices steps with the profile's
linear cost terms, folding a run of identical decode steps into one closed-form advance as
batchsim does. It only counts steps and advances the clock: that is the least work any
simulator with these rules must do per event. It refuses what it does not implement
(preemption, knobs other than the defaults, cost models with curves or several terms) rather
than approximate it, and the step count must equal batchsim's exactly (asserted).

Workloads: an Azure-conversation-like hour (the Azure LLM inference trace 2023 is not here:
traces/generate_chat.py's generator, 19,366 requests at 5.5 req/s, as bench/cli_speed.py) and
the issue's 1M synthetic case (`--request-rate 300 --input-len 1000 --output-len 200
--range-ratio 0.5`; --num-requests scales it down for quick runs). "batchsim s" is
`Simulator(...).run()` alone: the SimPy driver, the serving core, the policy and the recorder's
per-step record, without building tables or writing outputs. Each round runs the floor and
batchsim alternately (order swapped every round) in this process; CPU seconds, min over rounds.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "traces"))

DEFAULT_KNOBS = {"max_num_seqs": 256, "max_num_batched_tokens": 8192,
                 "enable_chunked_prefill": True, "long_prefill_token_threshold": 0,
                 "policy": "fcfs", "scheduler_reserve_full_isl": True, "async_scheduling": True}


def _coefs(model: Any) -> tuple[float, ...]:
    terms, curve = model.terms, model.curve
    assert len(terms) == 1 and curve is None, "the floor prices single-term models only"
    return terms[0]


def floor_run(arrival_s: list[float], input_tokens: list[int], output_tokens: list[int],
              costs: dict[str, tuple[float, ...]], num_blocks: int, block_size: int,
              max_num_seqs: int, max_batched: int) -> tuple[int, float]:
    """(steps, simulated end time) of the workload; see the module docstring."""
    c_pre, c_dec, c_mix = costs["packed.prefill"], costs["packed.decode"], costs["packed.mixed"]
    bs = block_size
    n_req = len(arrival_s)
    na = 0  # next arrival
    now = 0.0
    step = 0
    held: list[int] = []  # arrived since the last schedule call (async scheduling)
    waiting: deque[int] = deque()
    prefilling: list[list[int]] = []  # [request, computed, target], admission order
    n_running = 0  # seats taken (finished-but-held included)
    n_dec = 0
    decode_kv = 0  # KV tokens of decoding requests before the current step
    heap: list[tuple[int, int, int, int, int]] = []  # (finish step, req, entry step, len, res)
    need = [0] * bs  # decoding requests needing a new block at step s, by s % bs
    per_cycle = 0  # sum(need)
    free = num_blocks
    fin_count = fin_blocks = 0  # finished in the last step, released after this schedule

    def schedule() -> tuple[list[tuple[list[int], int, int]], int] | None:
        """One step's prefill chunks and max repeats, or None (nothing to run)."""
        nonlocal free, n_running
        g = need[step % bs]
        if g > free:
            raise NotImplementedError("floor: preemption")
        free -= g
        budget = max_batched - n_dec
        chunks = []
        for p in prefilling:
            if budget <= 0:
                break
            n = min(p[2] - p[1], budget)
            blocks = -(-(p[1] + n) // bs) - -(-p[1] // bs)
            if blocks > free:
                raise NotImplementedError("floor: preemption")
            free -= blocks
            chunks.append((p, p[1], n))
            budget -= n
        while waiting and n_running < max_num_seqs and budget > 0:
            r = waiting[0]
            target = input_tokens[r]
            if -(-target // bs) > free:
                break  # scheduler_reserve_full_isl
            n = min(target, max_batched, budget)
            if -(-n // bs) > free:
                break
            waiting.popleft()
            free -= -(-n // bs)
            p = [r, 0, target]
            prefilling.append(p)
            n_running += 1
            chunks.append((p, 0, n))
            budget -= n
        if not chunks and not n_dec:
            return None
        if chunks or held or fin_count:
            return chunks, 1
        limit = heap[0][0] - step + 1 if heap else 1
        if limit <= 1:
            return chunks, 1
        if per_cycle == 0:
            return chunks, limit
        f = free
        cycles = f // per_cycle
        steps = 1 + cycles * bs
        f -= cycles * per_cycle
        while steps < limit:
            k = need[(step + steps) % bs]
            if k > f:
                break
            f -= k
            steps += 1
        return chunks, min(steps, limit)

    def catch_up() -> None:
        nonlocal free, n_running, fin_count, fin_blocks
        free += fin_blocks
        n_running -= fin_count
        fin_count = fin_blocks = 0
        waiting.extend(held)
        held.clear()

    while True:
        while na < n_req and arrival_s[na] <= now:
            held.append(na)
            na += 1
        plan = schedule()
        if plan is None and (held or fin_count):
            catch_up()
            plan = schedule()
        catch_up()
        if plan is None:
            if na >= n_req and not (n_running or waiting):
                return step, now
            now = arrival_s[na]  # idle until the next arrival
            continue
        chunks, repeats = plan
        prefill = pairs = 0
        for _, start, n in chunks:
            prefill += n
            pairs += n * start + n * (n + 1) // 2
        seqs, ctx = n_dec + len(chunks), decode_kv + n_dec
        c = c_pre if n_dec == 0 else (c_dec if prefill == 0 else c_mix)
        b = (c[0] + c[1] * seqs + c[2] * (prefill + n_dec) + c[3] * prefill + c[4] * n_dec
             + c[5] * pairs + c[6] * ctx)
        k = 1
        if repeats > 1:
            s = c[6] * n_dec
            k = repeats
            if na < n_req:
                k = min(k, _steps_to_reach(b, s, arrival_s[na] - now))
            now += k * b + s * k * (k - 1) / 2
            # growth blocks of the run's later steps: whole block_size cycles, then the rest
            free -= (k - 1) // bs * per_cycle + sum(
                need[j % bs] for j in range(step + 1, step + 1 + (k - 1) % bs))
        else:
            now += b
        step += k
        decode_kv += n_dec * k
        last = step - 1
        while heap and heap[0][0] <= last:
            _, r, entry_step, entry_len, res = heapq.heappop(heap)
            kv_len = entry_len + step - entry_step
            decode_kv -= kv_len
            n_dec -= 1
            need[res] -= 1
            per_cycle -= 1
            fin_count += 1
            fin_blocks += -(-kv_len // bs)
        for p, _, n in chunks:
            p[1] += n
            if p[1] < p[2]:
                continue
            prefilling.remove(p)
            r, computed = p[0], p[1]
            if output_tokens[r] == 1:
                fin_count += 1
                fin_blocks += -(-computed // bs)
                continue
            res = (step - computed) % bs
            need[res] += 1
            per_cycle += 1
            decode_kv += computed
            n_dec += 1
            heapq.heappush(heap, (step + output_tokens[r] - 2, r, step, computed, res))


def _steps_to_reach(b: float, s: float, stop_s: float) -> int:
    """Smallest m >= 1 with m*b + s*m*(m-1)/2 >= stop_s (as sim.cost_model's)."""
    if s > 0:
        m = math.ceil((-(b - s / 2) + math.sqrt((b - s / 2) ** 2 + 2 * s * stop_s)) / s)
    else:
        m = math.ceil(stop_s / b)
    m = max(m, 1)
    while m > 1 and (m - 1) * b + s * (m - 1) * (m - 2) / 2 >= stop_s:
        m -= 1
    while m * b + s * m * (m - 1) / 2 < stop_s:
        m += 1
    return m


def _prepare(case: str, num_requests: int, tmp: Path) -> Any:
    from batchsim.sim.run import RunSpec, prepare
    from batchsim.sim.workload.synthetic import SyntheticSpec

    if case == "azure":
        from generate_chat import generate

        trace = tmp / "azure-conv-like.jsonl"
        if not trace.exists():
            trace.write_text("".join(json.dumps(r) + "\n" for r in generate(19_366, seed=2023)))
        spec = RunSpec(policy="continuous", trace=str(trace))
    else:
        spec = RunSpec(policy="continuous", synthetic=SyntheticSpec(
            num_requests=num_requests, request_rate=300, input_len=1000, output_len=200,
            range_ratio=0.5))
    return prepare(spec)


def _floor(prep: Any) -> tuple[float, int]:
    cfg, w = prep.policy.config, prep.workload
    for knob, value in DEFAULT_KNOBS.items():
        assert getattr(cfg, knob) == value, f"the floor implements default knobs only: {knob}"
    assert not prep.too_long
    costs = {k: _coefs(prep.profile.cost_models[k])
             for k in ("packed.prefill", "packed.decode", "packed.mixed")}
    args = (w.arrival_s.tolist(), w.input_tokens.tolist(), w.output_tokens.tolist(), costs,
            prep.policy.ledger.num_blocks, cfg.block_size, cfg.max_num_seqs,
            cfg.max_num_batched_tokens)
    t0 = time.process_time()
    steps, _ = floor_run(*args)
    return time.process_time() - t0, steps


def _batchsim(prep: Any) -> tuple[float, int]:
    from batchsim.sim.simulator import Simulator

    sim = Simulator(prep.profile, prep.policy, prep.workload, prep.too_long)
    t0 = time.process_time()
    result = sim.run()
    return time.process_time() - t0, result.recorder.num_steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num-requests", type=int, default=1_000_000, help="of the 1M case")
    p.add_argument("--only", choices=("azure", "1m"))
    args = p.parse_args()
    cases = [c for c in ("azure", "1m") if args.only in (None, c)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for case in cases:
            best = {"floor": math.inf, "batchsim": math.inf}
            steps: dict[str, int] = {}
            for k in range(args.rounds):
                order = ("floor", "batchsim") if k % 2 == 0 else ("batchsim", "floor")
                for side in order:
                    prep = _prepare(case, args.num_requests, Path(tmp_name))
                    cpu, n = (_floor if side == "floor" else _batchsim)(prep)
                    del prep
                    best[side] = min(best[side], cpu)
                    steps[side] = n
                print(f"{case}: round {k + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            assert steps["floor"] == steps["batchsim"], f"{case}: step counts differ: {steps}"
            name = ("azure-conv-like hour (19,366)" if case == "azure"
                    else f"synthetic {args.num_requests:,} at 300 req/s")
            rows.append((name, steps["batchsim"], best["floor"], best["batchsim"]))
    print(f"min CPU s over {args.rounds} alternating rounds; load average before the table "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'workload':<36}{'steps':>10}{'floor s':>9}{'batchsim s':>11}{'ratio':>7}")
    for name, steps_n, floor_s, sim_s in rows:
        print(f"{name:<36}{steps_n:>10}{floor_s:>9.3f}{sim_s:>11.3f}{sim_s / floor_s:>7.2f}")


if __name__ == "__main__":
    main()
