"""`profile` and `validate` without the profile extra: one line naming it, exit 2.

The missing module is simulated in a subprocess by a meta-path finder that refuses it, as an
interpreter without it would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "profiles" / "tiny-qwen2-cpu.json")

RUN_WITHOUT = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
from batchsim.cli import main
sys.exit(main({argv!r}))
"""


def run_without(blocked: set[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = RUN_WITHOUT.format(blocked=blocked, argv=argv)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("blocked", "argv", "named"), [
    ({"torch"}, ["profile", "--model", "tiny-qwen2", "--device", "cpu"], "needs torch"),
    ({"torch", "transformers"}, ["validate", "--profile", PROFILE, "--policy", "continuous"],
     "needs torch and transformers"),
    ({"psutil"}, ["profile", "--model", "tiny-qwen2"], "needs psutil"),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, blocked, argv, named):
    done = run_without(blocked, argv, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert named in done.stderr and "pip install 'batchsim[profile]'" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_refit_needs_no_torch(tmp_path):
    """--refit and --merge are numpy/scipy only: they run without the extra."""
    profile = tmp_path / "p.json"
    profile.write_bytes(Path(PROFILE).read_bytes())
    done = run_without({"torch", "transformers", "psutil"},
                       ["profile", "--refit", str(profile), "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "refitted" in done.stdout
