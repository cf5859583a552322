"""The human-readable experiment record of a profiling run (seed 004's template)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from batchsim.policies.base import StepShape, chunk_attn_pairs
from batchsim.sim.cost_model import CostModel

# Reference shapes of the record: (label, cost-model key, shape, tokens produced or consumed).
_REFERENCE = (
    ("prefill 128 tok, batch 1", "packed.prefill",
     StepShape(1, 128, 0, chunk_attn_pairs(0, 128), 0), 128),
    ("decode batch 1, ctx 128", "packed.decode", StepShape(1, 0, 1, 0, 129), 1),
    ("decode batch 8, ctx 128", "packed.decode", StepShape(8, 0, 8, 0, 8 * 129), 8),
)


def _measured(points: list[Mapping[str, Any]], key: str, shape: StepShape) -> float | None:
    """Median time of a measured point of exactly this shape, if the grid had one."""
    want = (shape.num_seqs, shape.num_prefill_tokens, shape.num_decode_seqs,
            shape.decode_ctx_tokens)
    for p in points:
        got = (p["num_seqs"], p["num_prefill_tokens"], p["num_decode_seqs"], p["decode_ctx_tokens"])
        if p["model"] == key and got == want:
            return float(p["time_s"])
    return None


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def experiment_record(doc: Mapping[str, Any], name: str | None = None) -> str:
    """Plain-text record of a finished profile document."""
    fp, run, model, mem = doc["fingerprint"], doc["run"], doc["model"], doc["memory"]
    points = doc["points"]
    lines = [
        f"## Experiment: {name or 'profile-' + str(fp['model'])}",
        f"Date: {str(fp['created'])[:10]}",
        f"Hardware: {fp['device']} ({fp['device_type']}"
        + (f", driver {fp['driver']}" if fp.get("driver") else "") + f"), host {fp.get('host')}",
        f"Model: {fp['model']} @ {fp['dtype']} ({model['num_params'] / 1e6:.1f} M params, "
        + ("checkpoint weights)" if model.get("weights") == "checkpoint" else "random weights)"),
        f"Software: torch {fp['torch']}, transformers {fp['transformers']}",
        # grid points as the progress bar counted them; one grid point can give two step
        # records (padded prefill and its decode)
        f"Grid: {run['grid']} ({len(doc['measured'])} points, {len(points)} step records, "
        f"{run['repeats']} repeats + {run['warmup']} "
        f"warm-up, seed {run['seed']}); step time = "
        + ("host wall time" if run.get("timing", "wall") == "wall" else "thread CPU time")
        + f", {fp.get('threads', '?')} torch thread(s)",
        "",
        "Metrics",
        "-------",
        f"{'load_model':<26}: {run.get('load_model_s') or 0:.2f} s",
    ]
    for label, key, shape, tokens in _REFERENCE:
        fitted = CostModel.from_json(doc["cost_models"][key]).predict(shape)
        measured = _measured(points, key, shape)
        t = measured if measured is not None else fitted
        src = (f"measured; fit {fitted * 1e3:.2f} ms" if measured is not None
               else "fit, not a grid point")
        lines.append(f"{label:<26}: {t * 1e3:9.2f} ms ({src}) = {tokens / t:,.0f} tok/s")
    ho = doc.get("host_overhead") or {}
    if ho:
        lines.append(f"{'smallest step':<26}: {ho['min_step_s'] * 1e3:9.2f} ms (prep "
                     f"{ho['prep_s'] * 1e3:.2f} ms)")
    lines.append(f"{'weights / KV per token':<26}: {_fmt_bytes(mem['weight_bytes'])} / "
                 f"{mem['kv_bytes_per_token']:,} B")
    limits = doc.get("limits") or {}
    if limits:
        lines.append(f"{'max decode batch':<26}: {limits['max_batch_size']} at ctx "
                     f"{limits['reference_context']} (bound: {limits['bound']})")
    if doc.get("kv_copy"):
        kv = doc["kv_copy"]
        lines.append(f"{'KV copy CPU->GPU':<26}: {kv['bytes_per_s'] / 1e9:.1f} GB/s + "
                     f"{kv['latency_s'] * 1e6:.0f} us")
    gpu = [(p["gpu_s"], p["wall_s"]) for p in points if p.get("gpu_s") and p.get("wall_s")]
    busy = (f"{sum(g for g, _ in gpu) / sum(w for _, w in gpu) * 100:.0f}% of step wall time "
            "(sum of GPU time / sum of wall time)" if gpu else "N/A (CPU only)")
    lines.append(f"{'GPU Utilization':<26}: {busy}")
    lines += ["", "Cost-model fit (5-fold CV on held-out points)", "-------"]
    for key, entry in doc["cost_models"].items():
        cv = entry.get("cv") or {}
        mape, worst = cv.get("mape"), cv.get("max_ape")
        err = (f"MAPE {mape * 100:5.1f}%  worst {worst * 100:5.1f}%"
               if mape is not None and worst is not None else "MAPE   n/a")
        lines.append(f"{key:<20}: {err}  n={cv.get('n_points')}  {cv.get('candidate')}")
    lines += ["", f"Total profiling time: {run.get('elapsed_s', 0.0):.1f} s"]
    if doc.get("skipped"):
        reasons = Counter(str(s.get("reason")) for s in doc["skipped"])
        why = {"oom": "out of memory", "kv_pool": "KV pool too small"}
        lines.append("Skipped points: " + ", ".join(
            f"{n} ({why.get(r, r)})" for r, n in sorted(reasons.items())))
    return "\n".join(lines) + "\n"
