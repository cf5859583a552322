"""Reading a sweep table: the highest load each configuration sustains under an SLO, the Pareto
frontier of throughput against latency, and the one-sentence recommendation.

Pure functions of the table (sim/sweep.py's columns), so they can be tested on hand-made rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SLO_TARGET = 0.99  # a load "meets the SLO" when at least this share of requests is good


def max_rate_under_slo(table: pd.DataFrame, target: float = SLO_TARGET) -> pd.DataFrame:
    """Per configuration: the highest request rate that meets the SLO, and the first that fails.

    A rate counts only if every lower tested rate of the same configuration also meets the SLO:
    a configuration that fails at 10 req/s and passes at 20 (noise, or a lucky burst) is not
    recommended for 20. max_rate is NaN when even the lowest rate fails; fails_at is NaN when no
    tested rate fails (the true limit is higher than the grid). Rows keep the table's order of
    configurations.
    """
    rows = []
    for config, g in table.groupby("config", sort=False):
        g = g.sort_values("request_rate")
        ok = (g["slo_attainment"] >= target).to_numpy()
        rates = g["request_rate"].to_numpy(dtype=float)
        first_fail = int(np.argmin(ok)) if not ok.all() else len(ok)
        best = g.iloc[first_fail - 1] if first_fail > 0 else None
        rows.append({
            "config": config,
            "max_rate": rates[first_fail - 1] if first_fail > 0 else math.nan,
            "fails_at": rates[first_fail] if first_fail < len(ok) else math.nan,
            "output_token_throughput": (best["output_token_throughput"] if best is not None
                                        else math.nan),
            "e2el_p99_ms": best["e2el_p99_ms"] if best is not None else math.nan,
            "slo_attainment_at_max": best["slo_attainment"] if best is not None else math.nan,
        })
    return pd.DataFrame(rows)


def pareto_mask(throughput: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """True where no other point has at least the throughput and strictly less latency (or
    more throughput at no more latency): the points worth choosing between."""
    x, y = np.asarray(throughput, float), np.asarray(latency, float)
    mask = np.zeros(len(x), dtype=bool)
    best = math.inf
    for i in np.lexsort((y, -x)):  # throughput descending, then latency ascending
        if np.isfinite(x[i]) and np.isfinite(y[i]) and y[i] < best:
            mask[i] = True
            best = y[i]
    return mask


def slo_text(slo: dict[str, float]) -> str:
    """{'ttft_ms': 500} -> `TTFT ≤ 500 ms` (joined with `and`)."""
    names = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "e2el_ms": "E2EL"}
    return " and ".join(f"{names.get(k, k)} ≤ {v:g} ms" for k, v in slo.items())


def recommendation(table: pd.DataFrame, slo: dict[str, float] | None) -> str:
    """The one sentence at the top of the sweep report."""
    n = table["config"].nunique()
    if not slo or "slo_attainment" not in table:
        best = table.iloc[int(np.argmax(table["output_token_throughput"].to_numpy()))]
        return (f"No SLO given (pass --goodput ttft:MS tpot:MS): the highest output throughput, "
                f"{best['output_token_throughput']:,.0f} tok/s, comes from {best['config']} at "
                f"{_rate(best['request_rate'])}, with p99 E2EL {best['e2el_p99_ms']:,.0f} ms.")
    limits = max_rate_under_slo(table)
    # Rank by the sustained rate; on a tie, prefer the one whose first failure comes later (or
    # never, within the grid), then more throughput, then lower p99 E2EL at that rate.
    ranked = limits.assign(
        rate_key=limits["max_rate"].fillna(-1.0), fail_key=limits["fails_at"].fillna(math.inf),
        latency_key=-limits["e2el_p99_ms"].fillna(math.inf),
    ).sort_values(["rate_key", "fail_key", "output_token_throughput", "latency_key"],
                  ascending=False, kind="stable")
    top = ranked.iloc[0]
    if math.isnan(top["max_rate"]):
        return (f"None of the {n} configurations keeps {SLO_TARGET:.0%} of requests within "
                f"{slo_text(slo)} even at the lowest tested rate: test lower rates or relax "
                "the SLO.")
    text = (f"Recommended: {top['config']}: it sustains {_rate(top['max_rate'])} with "
            f"{SLO_TARGET:.0%} of requests within {slo_text(slo)}, the highest of {n} "
            "configurations")
    if len(ranked) > 1:
        second = ranked.iloc[1]
        text += (f" (next: {second['config']} at {_rate(second['max_rate'])})"
                 if not math.isnan(second["max_rate"]) else " (no other meets it)")
    if math.isnan(top["fails_at"]):
        text += "; it met the SLO at every tested rate, so its limit lies above the grid"
    return text + "."


def _rate(rate: float) -> str:
    return "all requests at t=0" if math.isinf(rate) else f"{rate:,.3g} req/s"
