"""The real executor: the same policies drive the real engine and every request gets its tokens."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from batchsim.policies.registry import get_policy, make_config  # noqa: E402
from batchsim.profiler.real.executor import RealExecutor, random_prompts  # noqa: E402
from batchsim.profiler.real.validate import EngineSpec, ValidationEngines  # noqa: E402
from batchsim.sim.metrics import summarize  # noqa: E402
from batchsim.sim.profile import load_profile  # noqa: E402
from batchsim.sim.validation.plan import WorkloadSpec, at_rate, base_workload  # noqa: E402

PROFILE = "profiles/tiny-qwen2-cpu.json"


@pytest.fixture(scope="module")
def engines() -> ValidationEngines:
    spec = EngineSpec("tiny-qwen2", "cpu", "float32", threads=1, seed=0)
    return ValidationEngines.build(spec, packed_blocks=256, block_size=16, padded=True)


def _run(engines, policy_name, knobs, rate=400.0, n=12):
    profile = load_profile(PROFILE)
    work = at_rate(base_workload(WorkloadSpec(num_requests=n, input_len=20, output_len=6,
                                              range_ratio=0.5), seed=2), rate)
    policy = get_policy(policy_name)(make_config(policy_name, knobs), profile.memory,
                                     profile.max_model_len)
    prompts = random_prompts(work, engines.vocab_size, seed=0)
    result = RealExecutor(policy, work, prompts, engines.paged, engines.static, profile).run()
    requests = result.recorder.requests_table(result.requests)
    steps = result.recorder.steps_table()
    metrics = summarize(result.recorder, requests, steps, policy.kv_capacity_blocks, "real")
    return result, requests, metrics


@pytest.mark.parametrize(("policy", "knobs"), [
    ("static", {"max_batch_size": 4}),
    ("dynamic", {"max_batch_size": 4, "max_queue_delay_microseconds": 2000}),
    ("continuous", {"max_num_seqs": 4}),
])
def test_every_request_gets_exactly_its_tokens(engines, policy, knobs):
    """Each completed request generated output_tokens tokens on the engine, no more, no less."""
    result, requests, metrics = _run(engines, policy, knobs)
    assert metrics["completed"] == 12
    assert result.generated == requests["output_tokens"].tolist()
    assert len(result.host_s) == len(result.predicted_s) == result.recorder.num_steps
    assert (requests["first_token_s"] >= requests["arrival_s"]).all()
    assert (requests["finish_s"] >= requests["first_token_s"]).all()


def test_preemption_frees_and_recomputes_on_the_engine(engines):
    """A KV budget of a few blocks forces recompute preemptions; tokens still come out right."""
    # the tiny profile's device is its host RAM: this fraction leaves room for ~10 blocks
    profile = load_profile(PROFILE)
    mem = profile.memory
    target = 10 * 16 * mem.kv_bytes_per_token + mem.weight_bytes + mem.activation_reserve_bytes
    util = f"{target / mem.total_bytes:.8f}"
    result, requests, metrics = _run(engines, "continuous",
                                     {"max_num_seqs": 6, "gpu_memory_utilization": util},
                                     rate=float("inf"))
    assert metrics["preemptions"] > 0
    assert metrics["completed"] == 12
    assert result.generated == requests["output_tokens"].tolist()
    assert engines.paged is not None and engines.paged.seq_ids == []
