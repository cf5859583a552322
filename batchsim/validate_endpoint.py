"""`batchsim validate --endpoint URL`: the simulation against a running server, in one command.

Each load level's requests (the same `plan_validation` builds for the engine validation) are
sent to the server by the bench client and simulated with the profile and the policy; the
comparison is written in the engine validation's format (validation.json, validation.csv,
points/load-X/{real,sim}/..., report.html). The client's times include HTTP and network; when
the server reports its own per-request times (`batchsim serve` does, in the usage chunk) a
second comparison uses them, and the overhead (client TTFT minus server TTFT) is shown apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from batchsim.reports.fmt import metric_label
from batchsim.sim.run import RunOutput
from batchsim.sim.validation.plan import (
    SCHEMA,
    TARGET_METRICS,
    SimPlan,
    compare,
    error_summary,
    format_error_table,
    write_validation,
)

SERVER_SIDE = (("ttft_ms", "server_ttft_ms"), ("e2el_ms", "server_e2el_ms"))


def server_side_metrics(real: dict[str, Any]) -> dict[str, Any] | None:
    """The real metrics with TTFT and E2EL as the server measured them (None if it did not)."""
    if "server_ttft_ms" not in real:
        return None
    out = dict(real)
    for client_key, server_key in SERVER_SIDE:
        out[client_key] = real[server_key]
    return out


def _point(plan_point: Any, real: RunOutput, folder: str) -> dict[str, Any]:
    server = server_side_metrics(real.metrics)
    sm = real.metrics.get("server_metrics") or {}
    overhead = (real.metrics.get("client_overhead_ttft_ms") or {}).get("mean")
    return {
        "load": plan_point.load, "request_rate": plan_point.request_rate,
        "num_requests": len(plan_point.workload), "predicted_s": plan_point.predicted_s,
        "real_wall_s": real.metrics["duration_s"],
        "comparison": compare(real.metrics, plan_point.sim.metrics),
        "comparison_server_side": (compare(server, plan_point.sim.metrics)
                                   if server is not None else None),
        "client_overhead_ttft_ms_mean": overhead,
        "host_overhead": {"per_step_mean_s": (sm["host_ms_per_step"] / 1e3
                                              if sm.get("host_ms_per_step") is not None
                                              else None),
                          "num_steps": sm.get("engine_steps"), "total_s": sm.get("host_s")},
        "failed": real.metrics["failed"], "rejected": real.metrics["rejected"],
        "folder": folder,
    }


def run_endpoint_validation(args: argparse.Namespace, plan: SimPlan, out: Path,
                            command: str, say: Any) -> dict[str, Any]:
    """Bench every point against args.endpoint, compare, write `out`; returns the document."""
    from batchsim.bench_cmd import measure

    points, tables, jsons = [], {}, {}
    model = ""
    for p in plan.points:
        say(f"load {p.load:g}: {len(p.workload)} requests at {p.request_rate:.3g} req/s "
            f"to {args.endpoint} (simulated makespan {p.predicted_s:.1f} s)")
        real, model = measure(args, p.workload, f"load {p.load:g}")
        folder = f"points/load-{p.load:g}"
        points.append(_point(p, real, folder))
        tables[f"{folder}/real/requests.csv"] = real.requests
        tables[f"{folder}/real/steps.csv"] = real.steps
        tables[f"{folder}/sim/requests.csv"] = p.sim.requests
        tables[f"{folder}/sim/steps.csv"] = p.sim.steps
        jsons[f"{folder}/real/metrics.json"] = real.metrics
        jsons[f"{folder}/sim/metrics.json"] = p.sim.metrics
    errors = error_summary([p["comparison"] for p in points])
    server_side = ([p["comparison_server_side"] for p in points]
                   if all(p["comparison_server_side"] for p in points) else None)
    spec, profile = plan.spec, plan.profile
    doc = {
        "schema": SCHEMA, "schema_version": 1, "command": command,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "policy": spec.policy, "knobs": plan.points[0].sim.config["knobs"],
        "step_jitter": plan.points[0].sim.config.get("step_jitter"),
        "profile": {**profile.summary(), "fingerprint": profile.fingerprint},
        "engine": {"model": model, "device": args.endpoint,
                   "device_name": f"server at {args.endpoint}", "dtype": "?", "threads": None},
        "endpoint": {"url": args.endpoint, "model": model,
                     "max_concurrency": args.max_concurrency},
        "workload": {**dataclasses.asdict(spec.workload), "seed": spec.seed,
                     "base": plan.points[0].workload.source.split(" at ")[0]},
        "capacity": plan.capacity.to_json(),
        "loads": list(spec.loads),
        "points": points,
        "errors": errors,
        "errors_server_side": error_summary(server_side) if server_side else None,
        "target": {m: errors[m]["median_abs_error"] for m in TARGET_METRICS},
    }

    def report(folder: Path) -> None:
        from batchsim.reports.validation import write_validation_report

        write_validation_report(folder, folder / "report.html")

    write_validation(out, doc, tables, jsons, report=report)
    return doc


def format_endpoint_result(doc: dict[str, Any]) -> str:
    """The client-side error table, the server-side one (when the server timed itself), and
    the client + HTTP overhead on TTFT per load."""
    lines = ["client-side times (what a user sees: HTTP and network included):",
             format_error_table(doc, label=metric_label)]
    if doc.get("errors_server_side"):
        server_doc = {**doc, "errors": doc["errors_server_side"],
                      "points": [{**p, "comparison": p["comparison_server_side"]}
                                 for p in doc["points"]]}
        lines += ["", "server-side times (TTFT and E2EL as the server measured them):",
                  format_error_table(server_doc, ("ttft_ms.mean", "ttft_ms.p99",
                                                  "e2el_ms.mean", "e2el_ms.p99"),
                                     label=metric_label)]
    overhead = [p.get("client_overhead_ttft_ms_mean") for p in doc["points"]]
    lines.append("client + HTTP overhead on mean TTFT (client - server), ms: " + ", ".join(
        "n/a" if x is None else f"{x:.2f}" for x in overhead))
    failed = [p["failed"] + p["rejected"] for p in doc["points"]]
    if any(failed):
        lines.append(f"failed or rejected requests per load: {failed}")
    return "\n".join(lines)
