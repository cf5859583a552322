"""engine_queued_s / from_engine_queue: the simulated engine's QUEUED stamp (vLLM's engine core
reads new requests only between steps), worked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batchsim.sim.validation.observed_compare import engine_queued_s, from_engine_queue

# steps 0-10 ms and 10-25 ms, then idle, then 40-45 ms
STEPS = pd.DataFrame({"start_s": [0.0, 0.010, 0.040], "duration_s": [0.010, 0.015, 0.005]})


def test_a_request_arriving_mid_step_is_stamped_as_the_step_ends():
    arrival = np.array([0.0, 0.004, 0.010, 0.024, 0.030, 0.041, 0.050])
    # 0: at a step start, while it runs -> its end (10 ms); 4 ms -> 10; 10 ms (the second step
    # starts) -> 25; 24 -> 25; 30 (idle) -> 30; 41 -> 45; 50 (after the last step) -> 50
    assert engine_queued_s(arrival, STEPS) == pytest.approx(
        [0.010, 0.010, 0.025, 0.025, 0.030, 0.045, 0.050])
    assert engine_queued_s(arrival, STEPS.iloc[:0]) == pytest.approx(arrival)


def test_latencies_count_from_the_stamp_and_tpot_is_unchanged():
    req = pd.DataFrame({"arrival_s": [0.004, 0.030], "queue_ms": [21.0, 10.0],
                        "ttft_ms": [26.0, 15.0], "e2el_ms": [41.0, 15.0], "tpot_ms": [15.0, 0.0]})
    out = from_engine_queue(req, STEPS)
    # the first is stamped at 10 ms (6 ms after arriving), the second at once (idle engine)
    assert out["queue_ms"].tolist() == pytest.approx([15.0, 10.0])
    assert out["ttft_ms"].tolist() == pytest.approx([20.0, 15.0])
    assert out["e2el_ms"].tolist() == pytest.approx([35.0, 15.0])
    assert out["tpot_ms"].tolist() == [15.0, 0.0] and req["ttft_ms"].tolist() == [26.0, 15.0]
