"""`batchsim validate --observed RUN`: the simulation of a real run's own requests against the run,
from a vLLM request log or a batchsim run folder, with no engine.

tests/data/traces/vllm_log.jsonl holds three requests whose figures are worked out by hand
(times from queued_ts, relative to the first request at 50.0):
  r0: queued 0.0, first token 0.101, last 0.301, 11 tokens -> TTFT 101, E2EL 301, TPOT 20 ms
  r1: queued 0.5, first token 0.7,   last 1.1,    5 tokens -> TTFT 200, E2EL 600, TPOT 100 ms
  r2: queued 1.5, first token 1.9,   last 2.0,    2 tokens -> TTFT 400, E2EL 500, TPOT 100 ms
  duration = last finish 2.0 - first arrival 0.0 -> 1.5 req/s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from batchsim.cli import main

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"
LOG = DATA / "vllm_log.jsonl"
SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "llmservingsim"
          / "bench" / "examples" / "RTXPRO6000" / "Llama-3.1-8B" / "vllm")


def _validate(*args: str) -> int:
    return main(["validate", "--policy", "continuous", *args])


def test_vllm_log_real_side_by_hand_and_every_output_written(tmp_path, capsys):
    out = tmp_path / "val"
    assert _validate("--observed", str(LOG), "--out", str(out)) == 0
    assert "validation folder" in capsys.readouterr().out
    doc = json.loads((out / "validation.json").read_text())
    assert doc["kind"] == "observed" and doc["points"][0]["label"] == "observed"
    c = doc["points"][0]["comparison"]
    assert c["ttft_ms.mean"]["real"] == pytest.approx((101 + 200 + 400) / 3)
    assert c["e2el_ms.mean"]["real"] == pytest.approx((301 + 600 + 500) / 3)
    assert c["tpot_ms.mean"]["real"] == pytest.approx((20 + 100 + 100) / 3)
    assert c["request_throughput"]["real"] == pytest.approx(1.5)
    assert c["queue_ms.mean"]["real"] == pytest.approx((1 + 0 + 100) / 3)
    assert c["itl_ms.p99"]["real"] is None and c["itl_ms.p99"]["rel_error"] is None
    sim = pd.read_csv(out / "observed" / "sim" / "requests.csv")
    per = pd.read_csv(out / "per_request.csv")
    assert per["id"].tolist() == ["r0", "r1", "r2"]
    assert per["real_ttft_ms"].tolist() == pytest.approx([101, 200, 400])
    assert per["sim_e2el_ms"].tolist() == pytest.approx(sim["e2el_ms"].tolist())
    assert c["ttft_ms.mean"]["sim"] == pytest.approx(sim["ttft_ms"].mean())
    table = pd.read_csv(out / "validation.csv")
    assert set(table["load"]) == {"observed", "all"}
    html = (out / "report.html").read_text()
    assert "Per request: real vs simulated" in html and "Over time" not in html


def test_timeseries_beside_the_log_is_shifted_and_compared(tmp_path):
    """t counts from meta.json's started_at; the first request was sent 0.5 s after it."""
    run = tmp_path / "vllm"
    run.mkdir()
    shutil.copy(LOG, run / "requests.jsonl")
    # arrival_time of the first request is 1000.0 (epoch s): started 999.5
    (run / "meta.json").write_text(json.dumps({"started_at": "1970-01-01T00:16:39.5Z",
                                               "tick_seconds": 1.0}))
    ticks = [1.0, 2.0, 3.0, 4.0]
    pd.DataFrame({"t": ticks, "prompt_throughput": [100.0, 200, 300, 0],
                  "gen_throughput": [5.0, 5, 5, 3], "running": [1, 1, 1, 0],
                  "waiting": [0, 0, 0, 0], "kv_cache_pct": 0.0}).to_csv(
        run / "timeseries.csv", index=False)
    out = tmp_path / "val"
    assert _validate("--observed", str(run / "requests.jsonl"), "--out", str(out),
                     "--quiet") == 0
    ts = pd.read_csv(out / "timeseries.csv")
    assert ts["t"].tolist() == pytest.approx([0.5, 1.5, 2.5, 3.5])
    assert ts["real_prompt_throughput"].tolist() == [100, 200, 300, 0]
    # the ticks' intervals cover the whole simulated run: every token is counted once
    assert ts["sim_prompt_throughput"].sum() == pytest.approx(100 + 200 + 300)
    assert ts["sim_gen_throughput"].sum() == pytest.approx(11 + 5 + 2)
    # at t = 0.5 r0 has finished (the default profile serves it in well under 0.5 s), r1 arrives
    assert ts["sim_running"].iloc[0] + ts["sim_waiting"].iloc[0] == 1
    assert "Over time" in (out / "report.html").read_text()


def test_a_run_folder_replayed_by_the_same_simulator_matches_itself(tmp_path):
    """A batchsim run of these requests, observed and simulated again: no error."""
    first = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--num-requests", "30",
                 "--request-rate", "20", "--input-len", "200", "--output-len", "20",
                 "--range-ratio", "0.5", "--out", str(first), "--quiet"]) == 0
    out = tmp_path / "val"
    assert _validate("--observed", str(first), "--out", str(out), "--quiet") == 0
    doc = json.loads((out / "validation.json").read_text())
    assert doc["observed"]["kind"] == "run_folder"
    for name in ("request_throughput", "ttft_ms.mean", "ttft_ms.p99", "e2el_ms.mean",
                 "tpot_ms.p99", "itl_ms.p99"):
        # requests.csv keeps arrivals to the microsecond: TTFTs of a few ms move by ~1e-4
        assert abs(doc["points"][0]["comparison"][name]["rel_error"]) < 1e-3, name
    per = pd.read_csv(out / "per_request.csv")
    assert (per["ttft_rel_error"].abs() < 1e-3).all()


@pytest.mark.parametrize(("make", "extra", "message"), [
    (lambda d: (d / "log.jsonl").write_text(
        '{"input_toks": 5, "output_toks": 2, "queued_ts": 1.0, "scheduled_ts": 1.0, '
        '"last_token_ts": 2.0}\n'), (), "log.jsonl:1: missing first_token_ts"),
    (lambda d: shutil.copy(DATA / "mooncake.jsonl", d / "log.jsonl"), (),
     "a mooncake trace has arrivals but no served timings"),
    (lambda d: (d / "log.jsonl").mkdir(), (), "not a run folder (needs config.json and "
                                              "requests.csv)"),
    (lambda d: shutil.copy(LOG, d / "log.jsonl"), ("--trace", str(LOG)),
     "--trace cannot be combined with --observed"),
])
def test_bad_observed_input_is_one_line_and_writes_nothing(tmp_path, capsys, make, extra,
                                                           message):
    make(tmp_path)
    out = tmp_path / "val"
    assert _validate("--observed", str(tmp_path / "log.jsonl"), *extra, "--out", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_an_existing_folder_is_kept_without_force(tmp_path, capsys):
    out = tmp_path / "val"
    out.mkdir()
    assert _validate("--observed", str(LOG), "--out", str(out)) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared LLMServingSim data absent ({SHARED})")
def test_shared_pro6000_run_real_side_and_engine_config(tmp_path):
    """The published run's mean TTFT (7,097.2 ms, data README) comes out of the log; its
    meta.json sets max_num_seqs 128 and max_num_batched_tokens 2048."""
    out = tmp_path / "val"
    assert _validate("--observed", str(SHARED / "requests.jsonl"), "--engine-config",
                     str(SHARED / "meta.json"), "--out", str(out), "--quiet") == 0
    doc = json.loads((out / "validation.json").read_text())
    c = doc["points"][0]["comparison"]
    assert c["ttft_ms.mean"]["real"] == pytest.approx(7097.2, abs=0.1)
    assert c["e2el_ms.mean"]["real"] == pytest.approx(28200.7, abs=0.1)
    assert doc["knobs"]["max_num_seqs"] == 128 and doc["knobs"]["max_num_batched_tokens"] == 2048
    assert len(pd.read_csv(out / "timeseries.csv")) == 67


PERF = SHARED.parents[4] / "profiler" / "perf" / "RTXPRO6000" / "meta-llama" / "Llama-3.1-8B"
CONFIG = SHARED.parents[4] / "configs" / "model" / "meta-llama" / "Llama-3.1-8B.json"


@pytest.mark.skipif(not (SHARED.exists() and PERF.exists()),
                    reason=f"shared LLMServingSim data absent ({PERF})")
def test_shared_pipeline_import_then_observed_with_no_mismatch_warnings(tmp_path, caplog):
    """profile --import, then validate --observed with the run's meta.json: the engine's TP,
    dtype and model agree with the imported profile, so nothing is warned about."""
    profile = tmp_path / "P.json"
    assert main(["profile", "--import", "llmservingsim", str(PERF / "bf16"), "--model",
                 str(CONFIG), "--tp", "1", "--out", str(profile), "--quiet"]) == 0
    out = tmp_path / "val"
    assert _validate("--observed", str(SHARED / "requests.jsonl"), "--profile", str(profile),
                     "--engine-config", str(SHARED / "meta.json"), "--out", str(out),
                     "--quiet") == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    doc = json.loads((out / "validation.json").read_text())
    assert doc["profile"]["source"] == "imported"
    assert doc["engine_config"]["profile_warnings"] == []
    assert doc["points"][0]["comparison"]["tpot_ms.mean"]["sim"] > 0
