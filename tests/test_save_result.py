"""--save-result writes `vllm bench serve`'s result JSON: its keys, with metrics.json's values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from batchsim.cli import main
from batchsim.serve.bench_run import bench_output
from batchsim.serve.loadgen import RequestResult
from batchsim.sim.vllm_result import vllm_result
from batchsim.sim.workload.workload import Workload
from batchsim.summary import peak_concurrency

# vLLM's result_json keys (vllm/benchmarks/serve.py) for the default metric percentiles (99)
VLLM_KEYS = ("endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
             "request_rate", "burstiness", "max_concurrency", "duration", "completed", "failed",
             "total_input_tokens", "total_output_tokens", "request_throughput", "request_goodput",
             "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
             "max_concurrent_requests",
             *(f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
               for s in ("mean", "median", "std", "p99")))
DETAILED = ("input_lens", "output_lens", "ttfts", "itls", "errors")


def _simulate(tmp_path, *extra: str, policy: str = "continuous") -> tuple:
    out = tmp_path / "run"
    argv = ["simulate", "--policy", policy, "--num-prompts", "40", "--request-rate", "20",
            "--random-input-len", "100", "--random-output-len", "30", "--random-range-ratio",
            "0.5", "--out", str(out), "--quiet", "--no-report", *extra]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    requests = pd.read_csv(out / "requests.csv", keep_default_na=False, na_values=[""])
    return out, metrics, requests


@pytest.mark.parametrize("policy,knobs", [
    ("continuous", ["--set", "num_gpu_blocks_override=24", "--set", "block_size=16"]),
    ("static", []),
    ("hybrid", []),
])
def test_result_json_has_vllms_keys_and_metrics_values(tmp_path, policy, knobs):
    """Every vLLM key is there; totals, throughputs and statistics are those of metrics.json;
    the per-request ITLs are each request's token gaps (they pool into the ITL statistics)."""
    out, metrics, requests = _simulate(tmp_path, "--save-result", "--save-detailed", *knobs,
                                       policy=policy)
    doc = json.loads((out / "result.json").read_text())
    assert set(VLLM_KEYS) | set(DETAILED) <= set(doc)
    assert "date" not in doc and "generated_texts" not in doc
    if knobs:
        assert metrics["preemptions"] > 0  # the gaps across a preemption are in the lists too
    done = requests[requests["status"] == "completed"]
    assert doc["label"] == policy and doc["num_prompts"] == 40 and doc["request_rate"] == 20.0
    assert doc["completed"] == metrics["completed"] == len(done)
    assert doc["failed"] == 40 - len(done)
    assert doc["total_input_tokens"] == done["input_tokens"].sum()
    assert doc["total_output_tokens"] == done["output_tokens"].sum()
    assert doc["duration"] == metrics["duration_s"]
    assert doc["output_throughput"] == metrics["output_token_throughput"]
    for name in ("ttft", "tpot", "itl", "e2el", "queue"):
        assert doc[f"mean_{name}_ms"] == metrics[f"{name}_ms"]["mean"]
        assert doc[f"median_{name}_ms"] == metrics[f"{name}_ms"]["median"]
        assert doc[f"p99_{name}_ms"] == metrics[f"{name}_ms"]["p99"]
    assert doc["std_ttft_ms"] == pytest.approx(np.std(done["ttft_ms"]))
    assert doc["input_lens"] == requests["input_tokens"].tolist()
    assert doc["ttfts"] == pytest.approx((requests["ttft_ms"] / 1e3).tolist())
    itls = doc["itls"]
    for k, row in requests.iterrows():
        assert len(itls[k]) == row["output_tokens"] - 1  # one gap between each two tokens
        assert sum(itls[k]) == pytest.approx((row["e2el_ms"] - row["ttft_ms"]) / 1e3)
    pooled = np.concatenate([np.asarray(x, dtype=float) for x in itls]) * 1e3
    assert pooled.mean() == pytest.approx(metrics["itl_ms"]["mean"])
    assert np.percentile(pooled, 99) == pytest.approx(metrics["itl_ms"]["p99"])
    assert doc["std_itl_ms"] == pytest.approx(np.std(pooled))
    # vLLM counts a request in every one-second bucket it overlaps: never below the peak
    assert doc["max_concurrent_requests"] >= peak_concurrency(requests)
    assert 0 < doc["max_output_tokens_per_s"] <= done["output_tokens"].sum()


def test_default_result_is_the_summary_without_per_request_lists(tmp_path):
    """Without --save-detailed the lists are left out (as vLLM); --metric-percentiles and
    --percentile-metrics choose the keys; the same command gives the same bytes."""
    extra = ("--save-result", "--percentile-metrics", "ttft,e2el", "--metric-percentiles",
             "90,99", "--force")
    out, _, _ = _simulate(tmp_path, *extra)
    first = (out / "result.json").read_bytes()
    doc = json.loads(first)
    assert not set(DETAILED) & set(doc)
    assert {"p90_ttft_ms", "p99_e2el_ms", "std_e2el_ms"} <= set(doc)
    assert not any("tpot" in k or "itl" in k for k in doc)
    _simulate(tmp_path, *extra)
    assert (out / "result.json").read_bytes() == first


def test_result_dir_and_filename(tmp_path, capsys):
    """--result-dir (created) and --result-filename place the JSON outside the run folder; an
    existing one is replaced only with --force."""
    where = tmp_path / "results"
    flags = ("--save-result", "--result-dir", str(where), "--result-filename", "a.json")
    out, metrics, _ = _simulate(tmp_path, *flags)
    assert json.loads((where / "a.json").read_text())["completed"] == metrics["completed"]
    assert not (out / "result.json").exists()
    assert f"result JSON: {where / 'a.json'}" in capsys.readouterr().out
    (where / "a.json").write_text("mine\n")
    argv = ["simulate", "--policy", "continuous", "--num-prompts", "5", "--out",
            str(tmp_path / "other"), "--quiet", *flags]
    assert main(argv) == 2
    assert "a.json already exists" in capsys.readouterr().err
    assert (where / "a.json").read_text() == "mine\n" and not (tmp_path / "other").exists()
    assert main([*argv, "--force"]) == 0
    assert json.loads((where / "a.json").read_text())["num_prompts"] == 5


@pytest.mark.parametrize("flags,word", [
    (("--save-detailed",), "without --save-result"),
    (("--result-dir", "x"), "without --save-result"),
    (("--save-result", "--result-filename", "sub/a.json"), "plain file name"),
    (("--save-result", "--result-filename", "metrics.json"), "run folder has a file"),
])
def test_bad_result_flags_are_one_line(tmp_path, capsys, flags, word):
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--num-prompts", "5", "--out", str(out),
                 *flags]) == 2
    err = capsys.readouterr().err
    assert word in err and err.count("\n") == 1 and not out.exists()


def test_bench_results_give_the_same_keys():
    """A `batchsim bench` run (client times) gives its result JSON from the token chunks."""
    workload = Workload(arrival_s=np.array([0.0, 0.5, 1.0]), input_tokens=np.array([10, 20, 30]),
                        output_tokens=np.array([3, 2, 4]), priority=np.zeros(3, dtype=np.int64),
                        ids=None, source="test")
    results = [RequestResult(0, "completed", "", 0.0, 0.1, 0.3, [0.1, 0.2, 0.3], 3),
               RequestResult(1, "failed", "HTTP 500", 0.5),
               RequestResult(2, "completed", "", 1.0, 0.2, 0.5, [0.2, 0.3, 0.4, 0.5], 4)]
    config = {"policy": "server", "profile": {"model": "m"},
              "workload": {"source": "test", "num_requests": 3}}
    run = bench_output(workload, results, config, None)
    doc = vllm_result(run, ("ttft", "itl"), (99,), detailed=True, backend="openai",
                      max_concurrency=2)
    assert doc["completed"] == 2 and doc["failed"] == 1 and doc["max_concurrency"] == 2
    assert doc["itls"] == [pytest.approx([0.1, 0.1]), [], pytest.approx([0.1, 0.1, 0.1])]
    assert doc["ttfts"][1] is None and doc["errors"][1] == "HTTP 500"
    assert doc["mean_ttft_ms"] == pytest.approx(150.0)
    assert doc["std_itl_ms"] == pytest.approx(0.0, abs=1e-9)
    # tokens per one-second bucket from the first arrival: 3 in [0, 1), 4 in [1, 2)
    assert doc["max_output_tokens_per_s"] == 4.0 and doc["max_concurrent_requests"] == 1
