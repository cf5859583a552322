"""torch and transformers stay inside profiler/, the HTTP stack (FastAPI, Uvicorn, httpx) inside
serve/: the simulator side, the profile import (profiler/imported/) and the command line's
parser never import them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import sys
import batchsim.sim.run, batchsim.sim.simulator, batchsim.sim.metrics
import batchsim.sim.workload.synthetic, batchsim.sim.workload.workload
import batchsim.policies, batchsim.reports
import batchsim.cli, batchsim.profiler.analytic.builder
import batchsim.profiler.imported.llmservingsim
from batchsim.policies.registry import available
available()
batchsim.cli.build_parser()
from pathlib import Path
from batchsim.profiler.imported.llmservingsim import ImportConfig, import_profile
data = Path("tests/data/llmservingsim")
import_profile(ImportConfig(data / "perf/TINYGPU/org/tiny-moe/bf16", data / "configs/tiny-moe.json",
                            tp=2, gpu_memory_gb=4, num_points=40, num_heldout=20))
heavy = sorted(m for m in ("torch", "transformers", "fastapi", "uvicorn", "httpx",
                           "starlette") if m in sys.modules)
print(",".join(heavy))
"""


def test_simulator_side_imports_without_torch():
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "", f"imported: {done.stdout.strip()}"
