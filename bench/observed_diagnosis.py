"""Where a simulation of an observed vLLM run departs from it, request by request and over time.

Usage: python bench/observed_diagnosis.py SIM_RUN_FOLDER [--log REQUESTS.jsonl] [--window S]
  SIM_RUN_FOLDER: the `batchsim simulate` folder of the log's requests (bench/observed_validation.py
  --keep DIR leaves it under DIR/runs/); --log defaults to the shared RTX PRO 6000 run.

Prints (1) per block of 30 requests in arrival order: median queue (scheduled - queued) and
scheduled -> first token, real and simulated, median TTFT and E2EL, median TPOT error;
(2) whether either side ever scheduled out of arrival order; (3) the k-th request to finish,
real vs simulated; (4) the mean step time over windows of --window seconds, real and simulated,
both estimated the same way from the per-request logs: each request emits output - 1 tokens
between its first and last token, one per step, so the number of steps per second s(t) is the
non-negative least-squares solution of sum over windows of overlap(request, window) * s = tokens
(the simulation's true mean step time from steps.csv is printed beside it as a check of the
estimate); with the number of requests between first and last token.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import lsq_linear

ROOT = Path(__file__).resolve().parent.parent
LOG = (ROOT / ".." / "shared" / "data" / "llmservingsim" / "bench" / "examples" / "RTXPRO6000"
       / "Llama-3.1-8B" / "vllm" / "requests.jsonl")


def step_rate(first: np.ndarray, last: np.ndarray, tokens: np.ndarray, window: float,
              horizon: float) -> np.ndarray:
    edges = np.arange(0.0, horizon + window, window)
    lo, hi = edges[:-1], edges[1:]
    overlap = np.clip(np.minimum(last[:, None], hi) - np.maximum(first[:, None], lo), 0, None)
    return lsq_linear(overlap, tokens, bounds=(0, np.inf)).x


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sim", type=Path)
    p.add_argument("--log", type=Path, default=LOG)
    p.add_argument("--window", type=float, default=2.0)
    args = p.parse_args()
    if not args.log.exists():
        sys.exit(f"{args.log}: no such log (the shared data is absent?)")
    real = pd.DataFrame([json.loads(line) for line in args.log.read_text().splitlines() if line])
    t0 = real["queued_ts"].min()
    real = real.assign(arrival_s=real["queued_ts"] - t0, sched_s=real["scheduled_ts"] - t0,
                       first_s=real["first_token_ts"] - t0, last_s=real["last_token_ts"] - t0)
    real = real.sort_values(["arrival_s", "request_id"], kind="stable").set_index("request_id")
    sim = pd.read_csv(args.sim / "requests.csv").set_index("id").loc[real.index]
    steps = pd.read_csv(args.sim / "steps.csv")
    sim_sched = sim["arrival_s"] + sim["queue_ms"] / 1e3
    r_q = (real["sched_s"] - real["arrival_s"]) * 1e3
    r_p = (real["first_s"] - real["sched_s"]) * 1e3
    s_p = sim["ttft_ms"] - sim["queue_ms"]
    r_ttft, r_e2el = (real["first_s"] - real["arrival_s"]) * 1e3, (real["last_s"] -
                                                                   real["arrival_s"]) * 1e3
    r_tpot = (real["last_s"] - real["first_s"]) / (real["output_toks"] - 1) * 1e3
    print("(1) per 30 requests in arrival order (medians, ms; sim after real)")
    print(f"{'requests':<10}{'arrival s':>10}{'queue':>16}{'sched->first':>16}{'TTFT':>16}"
          f"{'E2EL':>16}{'TPOT err':>10}")
    for i in range(0, len(real), 30):
        sl = slice(i, i + 30)
        def med(x: object, sl: slice = sl) -> float:
            return float(np.median(np.asarray(x)[sl]))

        tp = (sim["tpot_ms"].to_numpy() / r_tpot.to_numpy() - 1)[sl]
        print(f"{i:>3}-{i + 29:<6}{med(real['arrival_s']):>10.1f}{med(r_q):>8.0f}"
              f"{med(sim['queue_ms']):>8.0f}{med(r_p):>8.1f}{med(s_p):>8.1f}{med(r_ttft):>8.0f}"
              f"{med(sim['ttft_ms']):>8.0f}{med(r_e2el):>8.0f}{med(sim['e2el_ms']):>8.0f}"
              f"{np.nanmedian(tp):>+10.1%}")
    out_of_order = lambda x: int((np.diff(np.asarray(x)) < -1e-6).sum())  # noqa: E731
    print(f"\n(2) scheduled out of arrival order: real {out_of_order(real['sched_s'])}, "
          f"sim {out_of_order(sim_sched)}")
    r_fin, s_fin = np.sort(real["last_s"].to_numpy()), np.sort(sim["finish_s"].to_numpy())
    print("\n(3) k-th finish, real / sim (s): " + ", ".join(
        f"{k}: {r_fin[k - 1]:.2f} / {s_fin[k - 1]:.2f}" for k in (1, 5, 10, 30, 50, 100, 200,
                                                                  len(r_fin))))
    many = real["output_toks"].to_numpy() > 1
    horizon = max(r_fin[-1], s_fin[-1])
    rr = step_rate(real["first_s"].to_numpy()[many], real["last_s"].to_numpy()[many],
                   real["output_toks"].to_numpy()[many] - 1.0, args.window, horizon)
    ss = step_rate(sim["first_token_s"].to_numpy()[many], sim["finish_s"].to_numpy()[many],
                   sim["output_tokens"].to_numpy()[many] - 1.0, args.window, horizon)
    print(f"\n(4) mean step time per {args.window:g} s window (ms), estimated from the logs")
    print(f"{'t s':>6}{'real':>9}{'sim':>9}{'real/sim':>10}{'sim true':>10}{'live real':>10}"
          f"{'live sim':>10}")
    start = steps["start_s"].to_numpy()
    for j in range(len(rr)):
        t = (j + 0.5) * args.window
        in_win = (start >= j * args.window) & (start < (j + 1) * args.window)
        true = steps["duration_s"].to_numpy()[in_win].mean() * 1e3 if in_win.any() else np.nan
        live_r = int(((real["first_s"] <= t) & (real["last_s"] > t)).sum())
        live_s = int(((sim["first_token_s"] <= t) & (sim["finish_s"] > t)).sum())
        if rr[j] > 0 and ss[j] > 0:
            print(f"{j * args.window:>6.0f}{1e3 / rr[j]:>9.2f}{1e3 / ss[j]:>9.2f}"
                  f"{ss[j] / rr[j]:>10.3f}{true:>10.2f}{live_r:>10}{live_s:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
