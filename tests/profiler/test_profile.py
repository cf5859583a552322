"""`batchsim profile` end to end on a tiny preset: file, resume, refusals, record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from batchsim.profiler.profiling.grid import build_grid  # noqa: E402
from batchsim.profiler.profiling.record import experiment_record  # noqa: E402
from batchsim.profiler.profiling.runner import ProfileConfig, ProfileInterrupted, run_profile  # noqa: E402
from batchsim.sim.cost_model import REQUIRED_MODELS  # noqa: E402
from batchsim.sim.profile import ProfileError, load_profile  # noqa: E402

MODEL = "tiny-qwen2"


def tiny_config(out: Path, **kw: Any) -> ProfileConfig:
    """Quick grid, one thread (steady timings on a busy machine), a small memory cap."""
    return ProfileConfig(model=MODEL, out=out, device="cpu", dtype="float32", grid="quick",
                         threads=1, memory_cap_bytes=64 << 20, **kw)


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profile") / "tiny.json"
    run_profile(tiny_config(out, clock="thread"),
                progress=lambda done, total, label: PROGRESS.append((done, total, label)))
    return out


PROGRESS: list[tuple[float, float, str]] = []  # the tiny profile's progress reports


def test_progress_is_reported_through_the_callback(tiny_profile: Path) -> None:
    """The runner draws nothing itself: it reports (done, total, label) after every point, up
    to the total, and the caller (the CLI) draws the bar."""
    points = json.loads(tiny_profile.read_text())["run"]["points_total"]
    assert len(PROGRESS) == points
    done = [d for d, _, _ in PROGRESS]
    assert done == sorted(done) and done[-1] == pytest.approx(PROGRESS[0][1])
    assert {label for _, _, label in PROGRESS} == {f"profile {MODEL} (quick, {points} points)"}


def test_tiny_profile_loads_in_the_simulator(tiny_profile: Path) -> None:
    """A finished profile is measured, complete, and accepted by sim.profile.load_profile."""
    prof = load_profile(tiny_profile)
    assert prof.source == "measured"
    assert set(REQUIRED_MODELS) <= set(prof.cost_models)
    assert prof.fingerprint["device_type"] == "cpu" and prof.fingerprint["model"] == MODEL
    for key in REQUIRED_MODELS:
        assert prof.cv[key]["n_points"] >= 5 and prof.cv[key]["folds"] == 5
        assert prof.cv[key]["mape"] is not None
    doc = json.loads(tiny_profile.read_text())
    assert doc["complete"] is True
    assert set(doc["fingerprint"]) >= {"device", "driver", "torch", "transformers", "dtype",
                                       "model", "config_hash", "created", "host"}
    # K and V, 2 layers, 2 KV heads, head_dim 16, fp32
    assert doc["memory"]["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4
    assert doc["memory"]["activation_reserve_bytes"] > 0
    assert doc["limits"]["max_batch_size"] > 0 and doc["limits"]["oom"]
    assert len(doc["points"]) > 40 and all(p["time_s"] > 0 for p in doc["points"])
    assert doc["run"]["timing"] == "thread" and doc["fingerprint"]["threads"] == 1
    domain = doc["cost_models"]["packed.decode"]["domain"]
    assert 0 < domain["decode_ctx_tokens"][0] < domain["decode_ctx_tokens"][1]


def test_record_names_the_experiment(tiny_profile: Path) -> None:
    """The experiment record has the seed-004 fields and each key's fit error."""
    text = experiment_record(json.loads(tiny_profile.read_text()))
    for needle in ("## Experiment:", "Date:", "Hardware:", "Model: tiny-qwen2 @ float32",
                   "load_model", "prefill 128 tok", "decode batch 8", "tok/s", "MAPE",
                   "Total profiling time"):
        assert needle in text, needle


def test_interrupt_then_resume(tmp_path: Path) -> None:
    """Ctrl-C after N points leaves a valid partial file; --resume measures only the rest."""
    out = tmp_path / "p.json"

    def stop_after_5(n: int) -> None:
        if n == 5:
            raise KeyboardInterrupt

    with pytest.raises(ProfileInterrupted, match="5 of"):
        run_profile(tiny_config(out), on_point=stop_after_5)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and len(partial["measured"]) == 5
    with pytest.raises(ProfileError, match=r"incomplete.*--resume"):
        load_profile(out)
    with pytest.raises(ValueError, match="interrupted profile: add --resume"):
        run_profile(tiny_config(out))
    # a point saved by an interrupt that struck before it was listed as measured is redone
    next_id = build_grid("quick", "cpu", 512, seed=0).points[5].id  # tiny: max_model_len 512
    assert next_id not in partial["measured"]
    stray = {**partial["points"][0], "id": next_id}
    out.write_text(json.dumps({**partial, "points": [*partial["points"], stray]}))

    calls: list[int] = []
    done = run_profile(tiny_config(out, resume=True), on_point=calls.append).document
    total = done["run"]["points_total"]
    assert len(calls) == total - 5
    assert len(done["measured"]) == len(set(done["measured"])) == total
    ids = [p["id"] for p in done["points"]]
    assert len(ids) == len(set(ids))
    first = {p["id"]: p for p in partial["points"]}
    kept = {p["id"]: p for p in done["points"] if p["id"] in first}
    assert kept == first  # the measured points were kept, not measured again
    load_profile(out)


def test_corrupted_partial_is_refused(tmp_path: Path) -> None:
    """A damaged file is refused on resume with a message saying what to do."""
    out = tmp_path / "bad.json"
    out.write_text('{"schema": "batchsim.profile", "complete": fal')
    with pytest.raises(ValueError, match=r"corrupted.*delete it"):
        run_profile(tiny_config(out, resume=True))
    out.write_text('{"schema": "batchsim.profile", "schema_version": 1, "complete": false}')
    with pytest.raises(ValueError, match="corrupted"):
        run_profile(tiny_config(out, resume=True))


@pytest.mark.parametrize(("edit", "names"), [
    (lambda d: d.pop("run"), "run"),
    (lambda d: d["run"].update(seed="abc"), "seed"),
    (lambda d: d.update(skipped={}), "skipped"),
])
def test_partial_with_damaged_fields_is_refused(tiny_profile: Path, tmp_path: Path, edit: Any,
                                                names: str) -> None:
    """Damage inside an otherwise valid partial file is named, not a KeyError mid-run."""
    doc = json.loads(tiny_profile.read_text())
    doc["complete"] = False
    edit(doc)
    out = tmp_path / "damaged.json"
    out.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"{out}.*corrupted \({names}"):
        run_profile(tiny_config(out, resume=True))


def test_resume_refuses_other_measurement(tiny_profile: Path, tmp_path: Path) -> None:
    """A partial file measured with another dtype or grid is not continued."""
    doc = json.loads(tiny_profile.read_text())
    doc["complete"] = False
    out = tmp_path / "other.json"
    out.write_text(json.dumps(doc))
    cfg = ProfileConfig(model=MODEL, out=out, dtype="bfloat16", threads=1, resume=True)
    with pytest.raises(ValueError, match=r"cannot resume.*dtype='float32'"):
        run_profile(cfg)
    with pytest.raises(ValueError, match="--grid standard"):
        run_profile(ProfileConfig(model=MODEL, out=out, grid="standard", threads=1, resume=True))
    with pytest.raises(ValueError, match="nothing to resume"):
        run_profile(tiny_config(tmp_path / "missing.json", resume=True))
    with pytest.raises(ValueError, match="already a complete profile"):
        run_profile(tiny_config(tiny_profile, resume=True))


@pytest.fixture
def one_thread() -> Any:
    """One torch thread: steady on a busy machine (the profile runs set it themselves)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_search_max_decode_batch_finds_the_pool_bound() -> None:
    """With 100 blocks of 16 tokens and 2 blocks per sequence, about 50 decodes fit."""
    from batchsim.profiler.engine.paged_engine import Engine
    from batchsim.profiler.profiling.capacity import search_max_decode_batch
    from batchsim.profiler.profiling.engines import is_oom

    engine = Engine(MODEL, num_blocks=100)
    limits = search_max_decode_batch(engine, context=30, start=8, max_batch=1024, is_oom=is_oom)
    assert 47 <= limits["max_batch_size"] <= 50
    assert limits["bound"] == "kv_pool"
    assert any(not p["fits"] for p in limits["oom"])
    assert not engine.seq_ids  # every probe cleaned up


@pytest.mark.usefixtures("one_thread")
def test_cpu_copy_prefill_points_run_on_the_cpu_engine() -> None:
    """cpu.packed.prefill points (CUDA runs) are measured on a CPU copy and fit like prefill."""
    import numpy as np

    from batchsim.profiler.profiling.engines import ProfilingEngines
    from batchsim.profiler.profiling.fit import fit_points
    from batchsim.profiler.profiling.measure import Repeats

    grid = build_grid("quick", "cuda", 512, seed=0, cuda_extras=True)
    points = [p for p in grid.points if p.key == "cpu.packed.prefill"]
    engines = ProfilingEngines(MODEL, "cpu", "float32", seed=0, memory_cap_bytes=16 << 20)
    engines.size_paged_pool(grid.points)
    rng = np.random.default_rng(0)
    try:
        records = [r for p in points for r in engines.runner(p.key, rng).measure(p, Repeats(0, 2))]
        assert engines._paged is None  # only the CPU copy was built
    finally:
        engines.close()
    assert {r["model"] for r in records} == {"cpu.packed.prefill"} and len(records) == len(points)
    assert fit_points(records)["cpu.packed.prefill"].cv["n_points"] == len(points)
