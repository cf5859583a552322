"""`batchsim validate` end to end on CPU with the tiny model (no accuracy assertion)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from batchsim.cli import main

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
PROFILE = str(ROOT / "profiles" / "tiny-qwen2-cpu.json")
SHORT = ["--num-requests", "8", "--input-len", "16", "--output-len", "4", "--seed", "1"]


def test_validate_writes_the_comparison(tmp_path, capsys):
    out = tmp_path / "val"
    code = main(["validate", "--profile", PROFILE, "--policy", "continuous", "--loads", "0.5",
                 "--set", "max_num_seqs=4", *SHORT, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "about" in printed and "request throughput (req/s)" in printed and str(out) in printed
    doc = json.loads((out / "validation.json").read_text())
    assert doc["schema"] == "batchsim.validation"
    assert doc["profile"]["digest"] and doc["profile"]["fingerprint"]["model"] == "tiny-qwen2"
    assert doc["engine"]["torch"] and doc["engine"]["transformers"] and doc["engine"]["threads"]
    assert doc["command"].startswith("batchsim validate --profile")
    point = doc["points"][0]
    for metric in ("request_throughput", "e2el_ms.p99", "itl_ms.mean", "preemptions"):
        assert set(point["comparison"][metric]) == {"real", "sim", "rel_error"}
    assert "mape" in doc["errors"]["e2el_ms.mean"]
    assert point["host_overhead"]["num_steps"] > 0
    drift = point["machine_drift"]
    assert drift["ratio"] == pytest.approx((drift["before"] * drift["after"]) ** 0.5)
    assert {r["when"] for r in drift["points"]} == {"before", "after"}
    assert doc["step_jitter"]["replicas"] == 8  # on by default: the mean of 8 draws
    steps = pd.read_csv(out / point["folder"] / "real" / "steps.csv")
    # steps.csv holds times to the microsecond (%.6f): each of the two sums is off by at most
    # half a microsecond a step, which on ~1 ms steps is a few 1e-4 of the ratio
    slack = len(steps) * 5e-7
    measured, predicted = steps["duration_s"].sum(), steps["predicted_s"].sum()
    assert ((measured - slack) / (predicted + slack) <= point["step_cost_level"]
            <= (measured + slack) / (predicted - slack))
    assert set(point["comparison_level_matched"]["e2el_ms.mean"]) == {"real", "sim", "rel_error"}
    csv = pd.read_csv(out / "validation.csv")
    assert {"load", "metric", "real", "sim", "rel_error", "mape"} <= set(csv.columns)
    real = pd.read_csv(out / point["folder"] / "real" / "requests.csv")
    assert (real["generated_tokens"] == real["output_tokens"]).all()
    assert (real["status"] == "completed").all()
    sim = pd.read_csv(out / point["folder"] / "sim" / "requests.csv")
    assert real["arrival_s"].tolist() == sim["arrival_s"].tolist()  # the same requests
    assert (out / point["folder"] / "sim" / "steps.csv").exists()
    assert (out / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "tiny-llama"], "is not the model"),
    (["--device", "cuda"], "use --device cpu"),
    (["--set", "max_num_seq=4"], "unknown knob"),
    (["--loads", "0.5,x"], "--loads"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "val"
    code = main(["validate", "--profile", PROFILE, "--policy", "continuous", *SHORT,
                 "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(("edit", "message"), [
    ({"complete": False}, "incomplete"),
    ({"source": "analytic"}, "was not measured"),
])
def test_unusable_profiles_are_refused(tmp_path, capsys, edit, message):
    doc = json.loads(Path(PROFILE).read_text())
    doc.update(edit)
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(doc))
    code = main(["validate", "--profile", str(bad), "--policy", "static", *SHORT,
                 "--out", str(tmp_path / "val")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "val").exists()


def test_level_hint_speaks_only_when_the_machine_ran_off_the_profile():
    from batchsim.validate_cmd import level_hint

    def point(load, level, raw, matched):
        return {"load": load, "step_cost_level": level,
                "comparison": {"e2el_ms.mean": {"rel_error": raw}},
                "comparison_level_matched": {"e2el_ms.mean": {"rel_error": matched}}}

    assert level_hint({"points": [point(0.5, 1.03, -0.04, -0.01)]}) is None
    hint = level_hint({"points": [point(0.5, 1.03, -0.04, -0.01), point(0.8, 1.21, -0.3, 0.02)]})
    assert hint is not None and "load 0.8: 1.21x" in hint and "-30.0% -> +2.0%" in hint
    assert "load 0.5" not in hint
