"""`batchsim profile` command line: defaults and one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from batchsim.cli import main
from batchsim.profile_cmd import add_arguments
from batchsim.profiler.profiling.runner import default_out


def errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no traceback
    return err


def test_unknown_model_lists_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown model is one line naming the presets."""
    err = errors(capsys, ["--model", "gpt-9", "--device", "cpu"])
    assert "unknown model 'gpt-9'" in err and "qwen2.5-0.5b" in err and "tiny-qwen2" in err


def test_cuda_without_cuda_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Asking for CUDA on a machine without it says so and suggests --device cpu."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "--device cpu" in errors(capsys, ["--model", "tiny-qwen2", "--device", "cuda"])


def test_float16_on_cpu_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """float16 on the CPU is refused with the dtypes that work."""
    err = errors(capsys, ["--model", "tiny-qwen2", "--device", "cpu", "--dtype", "float16"])
    assert "float16" in err and "float32" in err


def test_unwritable_output_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An output in a missing folder fails before anything is measured."""
    out = tmp_path / "no" / "such" / "p.json"
    err = errors(capsys, ["--model", "tiny-qwen2", "--device", "cpu", "--out", str(out)])
    assert "cannot write" in err and not out.exists()


def test_default_output_name() -> None:
    """profile-<model>-<device>-<dtype>.json in the current folder."""
    assert default_out("qwen2.5-0.5b", "cuda:1", "bfloat16") == Path(
        "profile-qwen2.5-0.5b-cuda-bfloat16.json")
    out = default_out("/models/my-llama/", "cpu", "float32")
    assert out.name == "profile-my-llama-cpu-float32.json"
    args = argparse.ArgumentParser()
    add_arguments(args)
    ns = args.parse_args(["--model", "tiny-qwen2"])
    assert ns.out is None and ns.grid is None and ns.dtype is None


def test_interrupt_prints_how_to_resume(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a run: exit 130 and the exact command that resumes it."""
    import batchsim.profiler.profiling.runner as prof

    out = tmp_path / "p.json"

    def interrupted(config: prof.ProfileConfig, **kw: Any) -> prof.ProfileResult:
        raise prof.ProfileInterrupted(config.out, 3, 60)

    monkeypatch.setattr(prof, "run_profile", interrupted)
    assert main(["profile", "--model", "tiny-qwen2", "--device", "cpu", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted after 3 of 60 grid points" in err
    assert f"--out {out} --resume" in err and "--dtype float32" in err


def test_thread_clock_needs_one_cpu_thread(capsys: pytest.CaptureFixture[str]) -> None:
    """--clock thread is only meaningful with one torch thread on the CPU."""
    err = errors(capsys, ["--model", "tiny-qwen2", "--device", "cpu", "--clock", "thread"])
    assert "--threads 1" in err


@pytest.mark.parametrize(("content", "message"), [
    ('{"model_type": ', "is not valid JSON"),
    ('{"hidden_size": 8}', "has no 'model_type'"),
    ('{"model_type": "bert"}', "model_type 'bert' is not supported"),
    ('{"model_type": "qwen2", "hidden_size": "abc"}', "not a usable qwen2 config"),
])
def test_bad_config_json_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     content: str, message: str) -> None:
    """A config.json that cannot describe a supported model is one line naming the file."""
    config = tmp_path / "config.json"
    config.write_text(content)
    err = errors(capsys, ["--model", str(config), "--device", "cpu",
                          "--out", str(tmp_path / "p.json")])
    assert str(config) in err and message in err
    assert not (tmp_path / "p.json").exists()


def test_failed_run_keeps_the_existing_profile(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    """A run that fails before measuring anything leaves the file at --out untouched."""
    out = tmp_path / "p.json"
    out.write_text('{"schema": "batchsim.profile", "complete": true, "kept": 1}\n')
    before = out.read_bytes()
    assert "already exists" in errors(capsys, ["--model", "tiny-qwen2", "--device", "cpu",
                                               "--out", str(out)])  # replacing needs --force
    err = errors(capsys, ["--model", "tiny-qwen2", "--device", "cpu", "--memory-cap-gb", "1e-7",
                          "--out", str(out), "--force"])
    assert "raise --memory-cap-gb" in err
    assert out.read_bytes() == before
    assert "--seed must be a non-negative integer" in errors(
        capsys, ["--model", "tiny-qwen2", "--device", "cpu", "--seed", "-1", "--out", str(out),
                 "--force"])
