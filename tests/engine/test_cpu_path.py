"""The real executor's CPU path: hybrid on two CPU engines (the "GPU" one is a CPU engine too).

Some requests are prefilled by the CPU worker thread and handed to the device engine, the rest
are prefilled there; every request must get exactly its tokens, and a handed-off request must
generate what it would have generated on the device engine alone (greedy, same weights).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from batchsim.policies.registry import get_policy, make_config  # noqa: E402
from batchsim.profiler.engine.paged_engine import Engine  # noqa: E402
from batchsim.profiler.engine.records import EngineChunk, EnginePlan  # noqa: E402
from batchsim.profiler.real.executor import RealExecutor, random_prompts  # noqa: E402
from batchsim.sim.metrics import summarize  # noqa: E402
from batchsim.sim.profile import cpu_cost_model, load_profile  # noqa: E402
from batchsim.sim.validation.plan import WorkloadSpec, at_rate, base_workload  # noqa: E402

PROFILE = "profiles/tiny-qwen2-cpu.json"
# Two seats and a small step budget: with every request queued at t=0, the GPU is full for the
# next several steps, so the CPU path (same cost model + a near-free copy) wins for queue heads
# behind it, while the first requests are admitted to the GPU's first step.
KNOBS = {"max_num_seqs": 2, "max_num_batched_tokens": 64, "cpu_max_prompt_tokens": 64,
         "hold_max_batch": 0}


def _engine() -> Engine:
    return Engine("tiny-qwen2", dtype="float32", num_blocks=128, block_size=16, seed=0)


def _greedy(engine: Engine, prompt: list[int], num_tokens: int) -> list[int]:
    """prompt + num_tokens greedy tokens on the engine alone."""
    engine.add("ref", prompt)
    engine.step(EnginePlan(prefills=[EngineChunk("ref", 0, len(prompt))]))
    for _ in range(num_tokens - 1):
        engine.step(EnginePlan(decodes=["ref"]))
    return engine.free("ref")


@pytest.fixture(scope="module")
def hybrid_run():
    profile = load_profile(PROFILE)
    # the CPU profile is both paths' cost model; the copy bandwidth is an assumption
    cpu = cpu_cost_model(profile, profile, kv_copy_gbps=50.0)
    work = at_rate(base_workload(WorkloadSpec(num_requests=12, input_len=20, output_len=6,
                                              range_ratio=0.5), seed=2), math.inf)
    policy = get_policy("hybrid")(make_config("hybrid", dict(KNOBS)), profile.memory,
                                  profile.max_model_len)
    device, cpu_engine = _engine(), _engine()
    outputs: dict[int, list[int]] = {}
    free = device.free

    def recording_free(seq_id):  # the executor frees a request's sequence when it finishes
        tokens = free(seq_id)
        outputs[seq_id] = tokens
        return tokens

    device.free = recording_free  # type: ignore[method-assign]
    prompts = random_prompts(work, device.info.vocab_size, seed=0)
    result = RealExecutor(policy, work, prompts, device, None, profile,
                          cpu_engine=cpu_engine, cpu_costs=cpu).run()
    device.free = free  # type: ignore[method-assign]
    return result, policy, device, prompts, outputs


def test_both_paths_run_and_every_request_gets_its_tokens(hybrid_run):
    result, policy, device, _, _ = hybrid_run
    rec = result.recorder
    requests = rec.requests_table(result.requests)
    steps = rec.steps_table()
    metrics = summarize(rec, requests, steps, policy.kv_capacity_blocks, "real")
    assert metrics["completed"] == 12
    assert result.generated == requests["output_tokens"].tolist()
    assert set(requests["prefill_path"]) == {"gpu", "cpu"}
    cpu_rows = steps[steps["device"] == "cpu"]
    assert len(cpu_rows) == (requests["prefill_path"] == "cpu").sum() == len(result.cpu_jobs)
    assert len(result.join_s) == len(cpu_rows)  # every hand-off joined the decodes (6 tokens)
    # a CPU step is its prefill plus the copy, and its end is the request's first token
    for job in result.cpu_jobs:
        assert job["duration_s"] == pytest.approx(job["prefill_s"] + job["copy_s"])
        assert job["copy_bytes"] > 0 and job["notice_late_s"] >= 0
    cpu_first = requests.loc[requests["prefill_path"] == "cpu", "first_token_s"].sort_values()
    ends = (cpu_rows["start_s"] + cpu_rows["duration_s"]).sort_values()
    assert cpu_first.to_numpy() == pytest.approx(ends.to_numpy())
    assert (requests["finish_s"] > requests["first_token_s"]).all()
    assert device.seq_ids == []


def test_handed_off_requests_generate_what_the_device_engine_would(hybrid_run):
    result, _, device, prompts, outputs = hybrid_run
    requests = result.recorder.requests_table(result.requests)
    for i in requests.index[requests["prefill_path"] == "cpu"]:
        r = result.requests[i]
        assert outputs[i] == _greedy(device, list(prompts[i]), r.output_tokens), i


VALIDATE = ["validate", "--profile", PROFILE, "--policy", "hybrid", "--loads", "0.8",
            "--set", "max_num_seqs=2", "--set", "max_num_batched_tokens=64",
            "--num-requests", "8", "--input-len", "16", "--output-len", "4", "--seed", "1"]


def test_validate_drives_hybrid_with_an_assumed_copy(tmp_path):
    """`batchsim validate --policy hybrid`: CPU path costs from --cpu-profile, the copy labelled
    an assumption, CPU-path rows in the real steps table with their copy time."""
    import json

    import pandas as pd

    from batchsim.cli import main

    out = tmp_path / "val"
    assert main([*VALIDATE, "--cpu-profile", PROFILE, "--kv-copy-gbps", "50", "--quiet",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "validation.json").read_text())
    assert doc["cpu_path"]["kv_copy"].startswith("assumed")
    assert "--kv-copy-gbps 50" in doc["command"]
    folder = out / doc["points"][0]["folder"] / "real"
    requests = pd.read_csv(folder / "requests.csv")
    assert (requests["generated_tokens"] == requests["output_tokens"]).all()
    steps = pd.read_csv(folder / "steps.csv")
    cpu = steps[steps["device"] == "cpu"]
    assert len(cpu) == (requests["prefill_path"] == "cpu").sum()
    if len(cpu):  # routing depends on real timing here; the executor test forces both paths
        assert cpu["kv_copy_s"].notna().all() and cpu["predicted_s"].notna().all()
        assert "cpu.packed.prefill" in doc["points"][0]["step_prediction"]


def test_validate_hybrid_without_a_copy_figure_is_one_line(tmp_path, capsys):
    from batchsim.cli import main

    code = main([*VALIDATE, "--cpu-profile", PROFILE, "--out", str(tmp_path / "val")])
    err = capsys.readouterr().err
    assert code == 2 and "--kv-copy-gbps" in err and len(err.strip().splitlines()) == 1
