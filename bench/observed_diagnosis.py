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
estimate); with the number of requests between first and last token; (5) per window of the
simulation's steps: the part of a step the dense and per-sequence tables of --perf give (all ops
but attention, composed like the importer: dense ops x layers at the step's token count, lm_head
and sampler at its sequence count), the rest (attention), and what the step would cost if the
dense ops ran padded to the next CUDA-graph capture size as vLLM does for steps of at most
--max-capture tokens (V1 default sizes 1, 2, 4, multiples of 8 below 256, multiples of 16 up to
max_cudagraph_capture_size = min(2 x max_num_seqs, 512): 256 for the run's max_num_seqs 128).
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
PERF = (ROOT / ".." / "shared" / "data" / "llmservingsim" / "profiler" / "perf" / "RTXPRO6000"
        / "meta-llama" / "Llama-3.1-8B" / "bf16" / "tp1")
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
    p.add_argument("--perf", type=Path, default=PERF, help="tpN folder of the run's tables")
    p.add_argument("--layers", type=int, default=32, help="the model's num_hidden_layers")
    p.add_argument("--max-capture", type=int, default=256, help="max_cudagraph_capture_size")
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
    if all((args.perf / f).exists() for f in ("dense.csv", "per_sequence.csv")):
        padding(steps, args.perf, args.layers, args.max_capture, args.window)
    else:
        print(f"\n(5) skipped: {args.perf} has no dense.csv and per_sequence.csv")
    return 0


def padding(steps: pd.DataFrame, perf: Path, layers: int, max_capture: int,
            window: float) -> None:
    dense = pd.read_csv(perf / "dense.csv").pivot_table(index="tokens", columns="layer",
                                                         values="time_us")
    once = [c for c in ("embedding", "final_layernorm") if c in dense]
    per_tok = dense.drop(columns=once).sum(axis=1) * layers + dense[once].sum(axis=1)
    seq = pd.read_csv(perf / "per_sequence.csv").pivot_table(
        index="sequences", columns="layer", values="time_us").sum(axis=1)
    sizes = np.array([1, 2, 4, *range(8, 256, 8), *range(256, max_capture + 1, 16)])
    tokens = (steps["prefill_tokens"] + steps["decode_tokens"]).to_numpy()
    graphed = tokens <= sizes[-1]
    padded = np.where(graphed, sizes[np.searchsorted(sizes, np.minimum(tokens, sizes[-1]))],
                      tokens)
    def ms(t: np.ndarray) -> np.ndarray:
        return np.interp(t, per_tok.index.to_numpy(), per_tok.to_numpy()) / 1e3

    fixed = ms(tokens) + np.interp(steps["batch_size"], seq.index.to_numpy(), seq.to_numpy()) / 1e3
    df = pd.DataFrame({"win": (steps["start_s"] // window * window).astype(int),
                       "n": steps["batch_size"], "step": steps["duration_s"] * 1e3,
                       "dense": fixed, "pad": ms(padded) - ms(tokens), "graphed": graphed})
    g = df.groupby("win").mean()
    print(f"\n(5) simulated step composition per {window:g} s window (ms, means) and CUDA-graph "
          f"padding of dense ops (steps <= {sizes[-1]} tokens)")
    print(f"{'t s':>6}{'running':>9}{'step':>8}{'dense':>8}{'attn':>8}{'graphed':>9}"
          f"{'+padding':>10}{'ratio':>8}")
    for w, r in g.iterrows():
        print(f"{w:>6}{r['n']:>9.1f}{r['step']:>8.2f}{r['dense']:>8.2f}"
              f"{r['step'] - r['dense']:>8.2f}{r['graphed']:>9.0%}{r['pad']:>10.3f}"
              f"{(r['step'] + r['pad']) / r['step']:>8.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
