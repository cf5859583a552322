"""The overload warning: a backlog that grows through the run, and only that."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batchsim.cli import main
from batchsim.sim.overload import overload


def _table(arrival, finish) -> pd.DataFrame:
    return pd.DataFrame({"arrival_s": np.asarray(arrival, float),
                         "finish_s": np.asarray(finish, float)})


def test_a_server_slower_than_its_arrivals_is_overloaded():
    """10 req/s arrive, 5 req/s are served one after another: the backlog grows linearly."""
    arrival = np.arange(200) * 0.1
    finish = 0.2 * (np.arange(200) + 1)
    found = overload(_table(arrival, finish))
    assert found is not None
    assert found.arrival_rate == pytest.approx(10.0)
    assert found.served_rate == pytest.approx(99 / 19.9)  # finished by the last arrival, 19.9 s
    assert found.backlog == 200 - 99
    assert "did not keep up" in found.message() and "10 req/s arrived" in found.message()


def test_a_server_that_keeps_up_is_not():
    arrival = np.arange(200) * 0.1
    assert overload(_table(arrival, arrival + 0.5)) is None  # 5 in flight, steady


def test_a_short_run_with_requests_in_flight_is_not():
    """Latency longer than the arrival window leaves most requests in flight at the last
    arrival, but the backlog does not grow: no warning."""
    arrival = np.arange(20) * 0.1
    assert overload(_table(arrival, arrival + 1.0)) is None


def test_no_arrival_window_and_rejections():
    assert overload(_table([0.0] * 5, [1, 2, 3, 4, 5])) is None  # all at t=0: no rate to keep
    arrival = np.arange(200) * 0.1
    finish = np.where(np.arange(200) % 2 == 0, np.nan, arrival + 0.5)  # half rejected
    assert overload(_table(arrival, finish)) is None


def test_simulate_warns_on_stderr(tmp_path, capsys):
    # chat.jsonl five times faster (28 req/s): static batching falls behind, continuous does not
    assert main(["simulate", "--policy", "static", "--trace", "chat.jsonl", "--time-scale", "0.2",
                 "--duration", "100", "--out", str(tmp_path / "static"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "batchsim: warning: the server did not keep up with its arrivals" in err
    assert main(["simulate", "--policy", "continuous", "--trace", "chat.jsonl", "--time-scale",
                 "0.2", "--duration", "100", "--out", str(tmp_path / "continuous"),
                 "--quiet"]) == 0
    assert "did not keep up" not in capsys.readouterr().err
