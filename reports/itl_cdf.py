"""itl_cdf.csv: a run's inter-token latency distribution as quantiles (no plotting imports, so
`simulate --no-report` writes it without loading plotly)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batchsim.reports.series import sample_cdf

if TYPE_CHECKING:
    from batchsim.sim.run import RunOutput

ITL_FILE = "itl_cdf.csv"


def write_itl_cdf(tmp_dir: Path, output: RunOutput) -> tuple[np.ndarray, np.ndarray]:
    """Writer for sim.run.write_run: itl_cdf.csv into the run folder being made; returns the
    quantiles (itl_ms, probability)."""
    # its last reader (the report draws these quantiles): the sorted sample can go
    x, p = sample_cdf(output.recorder.itl_sample(keep=False))
    pd.DataFrame({"probability": p, "itl_ms": x}).to_csv(tmp_dir / ITL_FILE, index=False,
                                                         float_format="%.6f")
    return x, p
