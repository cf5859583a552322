"""`pip install` of the wheel works from any folder: the shipped profiles and example trace are
package data, found through importlib.resources.

Builds the wheel from a copy of the sources (nothing written into the checkout), installs it
with --no-deps into a fresh venv that borrows this venv's site-packages through a .pth (numpy,
pandas, ...; no network), and runs simulate, trace stats and report from another folder.
About 30 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "batchsim", "sim", "policies", "profiler", "reports",
           "serve", "profiles", "traces")


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the fresh venv's bin folder, the environment to run it in)"""
    if shutil.which("pip", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("this interpreter's venv has no pip to build and install the wheel")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.html")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(src), "-w",
          str(tmp / "dist")], tmp, env)
    wheel = next((tmp / "dist").glob("batchsim-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    py = venv / "bin" / "python"
    _run([*pip, "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)], tmp, env)
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp, env).stdout.strip())
    # the dependencies from this venv (appended to sys.path, after the wheel's own files)
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin", env


def test_the_installed_package_is_the_wheel(installed, tmp_path):
    bin_dir, env = installed
    done = _run([str(bin_dir / "python"), "-c", "import batchsim; print(batchsim.__file__)"],
                tmp_path, env)
    assert Path(done.stdout.strip()).is_relative_to(bin_dir.parent)


def test_simulate_trace_stats_and_report_from_another_folder(installed, tmp_path):
    bin_dir, env = installed
    batchsim = str(bin_dir / "batchsim")
    _run([batchsim, "simulate", "--policy", "continuous", "--num-requests", "200",
          "--request-rate", "10", "--out", "run", "--quiet"], tmp_path, env)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert Path(config["profile"]["path"]).is_relative_to(bin_dir.parent)  # the wheel's copy
    stats = _run([batchsim, "trace", "stats", "chat.jsonl", "--json"], tmp_path, env)
    assert json.loads(stats.stdout)["num_requests"] == 3000
    _run([batchsim, "report", "run"], tmp_path, env)
    assert (tmp_path / "run" / "report.html").stat().st_size > 10_000
    _run([batchsim, "report", "qwen2.5-0.5b-h100-analytic.json"], tmp_path, env)
    assert (tmp_path / "qwen2.5-0.5b-h100-analytic.html").is_file()  # here, not in the venv
    _run([batchsim, "simulate", "--policy", "hybrid", "--trace", "chat.jsonl", "--max-input-len",
          "300", "--out", "hybrid", "--quiet"], tmp_path, env)
    assert json.loads((tmp_path / "hybrid" / "metrics.json").read_text())["completed"] > 0
