"""Behaviour check for refactors: run a fixed set of CLI runs and print a sha256 per output file.

Run it on two versions of the code and diff the printed (or written) digests: every file must
match. Usage::

    python bench/identical_outputs.py OUT_DIR [--batchsim 'python -m batchsim'] [--only NAME]

It writes the runs under OUT_DIR/<name>/ and OUT_DIR/digests.txt ("<sha256>  <name>/<file>").
The runs: every policy on a synthetic workload and on a window of traces/chat.jsonl, step jitter
on and off, hybrid with a CPU profile, clusters (routers, prefix caching, hybrid replicas), a
small sweep, and CPU `validate`s of the tiny model
(continuous and hybrid). Inputs are given as paths relative to the repository root (the runs
execute there), so both versions read the same files.

What is masked before hashing, and nothing else:
- the repository root and OUT_DIR (absolute paths differ between two checkouts) -> <ROOT>, <OUT>;
- in every JSON document: the keys "command" (the recorded command line) and "created"
  (a timestamp), and torch/transformers versions ("torch", "transformers");
- the real side of `validate`, whose numbers are wall-clock measurements that cannot repeat:
  real/steps.csv and real/requests.csv are reduced to their header plus, for requests, the
  columns id, input_tokens, output_tokens, status, generated_tokens (the step sequence itself
  depends on when arrivals are seen on the wall clock, so only the header of real/steps.csv is
  kept); real/metrics.json to its key structure; validation.json keeps the simulated side
  (policy, knobs, profile, workload, capacity, loads, per point: load, request_rate,
  num_requests, predicted_s, folder, every comparison's "sim") and the key structure of the rest;
  validation.csv keeps load, request_rate, metric, sim; the validate report.html is skipped
  (it renders those same documents). The simulated side (points/*/sim/*) is hashed in full.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHAT = "traces/chat.jsonl"
CPU = "profiles/qwen2.5-0.5b-cpu.json"  # measured: has repeat samples for --jitter
TINY = "profiles/tiny-qwen2-cpu.json"
SYN = ["--num-requests", "300", "--request-rate", "20", "--input-len", "512",
       "--output-len", "64", "--range-ratio", "0.5"]
WINDOW = ["--trace", CHAT, "--duration", "120"]
HYBRID_CPU = ["--cpu-profile", CPU, "--kv-copy-gbps", "25"]
SMALL_VALIDATE = ["--num-requests", "8", "--input-len", "16", "--output-len", "6",
                  "--loads", "0.5,0.9", "--jitter-replicas", "2", "--seed", "1"]

RUNS: dict[str, list[str]] = {
    "continuous-syn": ["simulate", "--policy", "continuous", *SYN],
    "static-syn": ["simulate", "--policy", "static", *SYN],
    "dynamic-syn": ["simulate", "--policy", "dynamic", *SYN],
    "hybrid-syn": ["simulate", "--policy", "hybrid", *SYN, *HYBRID_CPU],
    "continuous-trace": ["simulate", "--policy", "continuous", *WINDOW],
    "static-trace": ["simulate", "--policy", "static", *WINDOW],
    "dynamic-trace": ["simulate", "--policy", "dynamic", *WINDOW, "--time-scale", "0.5"],
    "hybrid-trace": ["simulate", "--policy", "hybrid", "--profile", CPU, "--trace", CHAT,
                     "--duration", "60", "--reject-too-long", *HYBRID_CPU],
    "continuous-jitter": ["simulate", "--policy", "continuous", "--profile", CPU, "--jitter",
                          "--num-requests", "60", "--request-rate", "2", "--input-len", "256",
                          "--output-len", "32", "--range-ratio", "0.5"],
    "static-jitter": ["simulate", "--policy", "static", "--profile", CPU, "--jitter",
                      "--trace", CHAT, "--duration", "30", "--max-input-len", "1024",
                      "--reject-too-long"],
    "hybrid-jitter": ["simulate", "--policy", "hybrid", "--profile", CPU, "--jitter",
                      "--cpu-profile", CPU, "--kv-copy-gbps", "10", "--num-requests", "60",
                      "--request-rate", "2", "--input-len", "256", "--output-len", "32"],
    "continuous-preempt": ["simulate", "--policy", "continuous", *SYN, "--request-rate", "inf",
                           "--set", "gpu_memory_utilization=0.03",
                           "--set", "enable_chunked_prefill=false"],
    "cluster-least-outstanding": ["simulate", "--policy", "continuous", *SYN, "--replicas", "4",
                                  "--router", "least_outstanding"],
    "cluster-least-kv-cache": ["simulate", "--policy", "continuous", *SYN, "--prefix-len", "256",
                               "--num-prefix-groups", "4", "--set", "enable_prefix_caching=true",
                               "--replicas", "3", "--router", "least_kv"],
    "cluster-mooncake": ["simulate", "--policy", "continuous", "--trace",
                         "tests/data/traces/mooncake.jsonl", "--trace-format", "mooncake",
                         "--reject-too-long", "--set", "enable_prefix_caching=true",
                         "--replicas", "3", "--router", "prefix_affinity"],
    "cluster-hybrid": ["simulate", "--policy", "hybrid", *SYN, *HYBRID_CPU, "--replicas", "2",
                       "--router", "round_robin"],
    "sweep": ["sweep", "--policy", "continuous", "--vary", "max_num_seqs=8,64",
              "--request-rate", "5,40", "--num-requests", "80", "--workers", "1",
              "--goodput", "ttft:500"],
    "sweep-hybrid-jitter": ["sweep", "--policy", "hybrid,continuous", "--profile", CPU,
                            "--jitter", *HYBRID_CPU, "--request-rate", "1,4",
                            "--num-requests", "40", "--input-len", "256", "--output-len", "16",
                            "--workers", "1"],
    "validate-continuous": ["validate", "--profile", TINY, "--policy", "continuous",
                            *SMALL_VALIDATE, "--set", "max_num_seqs=4"],
    "validate-hybrid": ["validate", "--profile", TINY, "--policy", "hybrid", *SMALL_VALIDATE,
                        "--cpu-profile", TINY, "--kv-copy-gbps", "5"],
}

_MASKED_KEYS = {"command", "created", "torch", "transformers"}
_REAL_REQUEST_COLUMNS = ("id", "input_tokens", "output_tokens", "status", "generated_tokens")


def _mask_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<masked>" if k in _MASKED_KEYS else _mask_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_json(v) for v in value]
    return value


def _keys(value: Any) -> Any:
    """The key structure of a JSON document (values dropped)."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(v) for v in value[:1]]
    return type(value).__name__ if value is not None else "null"


def _validation_doc(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("schema", "schema_version", "policy", "knobs", "cpu_path", "step_jitter", "profile",
            "workload", "capacity", "loads")
    out: dict[str, Any] = {k: doc.get(k) for k in keep}
    engine = doc.get("engine", {})
    out["engine"] = {k: engine.get(k) for k in ("model", "device", "device_name", "dtype",
                                                "threads")}
    out["points"] = [{"load": p["load"], "request_rate": p["request_rate"],
                      "num_requests": p["num_requests"], "predicted_s": p["predicted_s"],
                      "folder": p["folder"],
                      "sim": {m: c["sim"] for m, c in p["comparison"].items()}}
                     for p in doc["points"]]
    out["structure"] = _keys(doc)
    return out


def _csv_columns(text: str, columns: tuple[str, ...] | None) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return ""
    header = rows[0]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    if columns is not None:
        idx = [header.index(c) for c in columns if c in header]
        for row in rows[1:]:
            writer.writerow([row[i] for i in idx])
    return buf.getvalue()


def masked(rel: Path, text: str, out: Path) -> str | None:
    """The text that is hashed for output file `rel` (None: skipped)."""
    text = text.replace(str(out), "<OUT>").replace(str(ROOT), "<ROOT>")
    parts = rel.parts
    is_validate = parts[0].startswith("validate")
    if is_validate and rel.name == "report.html":
        return None
    if is_validate and "real" in parts:
        if rel.name == "steps.csv":
            return _csv_columns(text, None)
        if rel.name == "requests.csv":
            return _csv_columns(text, _REAL_REQUEST_COLUMNS)
        if rel.suffix == ".json":
            return json.dumps(_keys(json.loads(text)), indent=1, sort_keys=True)
    if is_validate and rel.name == "validation.json":
        return json.dumps(_mask_json(_validation_doc(json.loads(text))), indent=1)
    if is_validate and rel.name == "validation.csv":
        return _csv_columns(text, ("load", "request_rate", "metric", "sim"))
    if rel.suffix == ".json":
        return json.dumps(_mask_json(json.loads(text)), indent=1)
    return text


def run_all(out: Path, batchsim: list[str], only: str | None) -> list[str]:
    lines = []
    for name, argv in RUNS.items():
        if only is not None and name != only:
            continue
        folder = out / name
        cmd = [*batchsim, *argv, "--out", str(folder), "--force", "--quiet"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed ({done.returncode}): {shlex.join(cmd)}\n"
                             f"{done.stderr[-2000:]}")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(out)
            text = masked(rel, path.read_text(), out)
            if text is not None:
                digest = hashlib.sha256(text.encode()).hexdigest()
                lines.append(f"{digest}  {rel}")
        print(f"{name}: done", file=sys.stderr, flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--batchsim", default=f"{sys.executable} -m batchsim",
                   help="command that runs the CLI (default: this interpreter's batchsim)")
    p.add_argument("--only", choices=sorted(RUNS), help="one run only")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    lines = run_all(out, shlex.split(args.batchsim), args.only)
    (out / "digests.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
