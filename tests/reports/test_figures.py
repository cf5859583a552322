"""Figures built from small hand-made tables have the traces and values a reader expects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchsim.reports import figures
from batchsim.reports.sweep_report import LATENCY_CHOICES, attainment_figure, tradeoff_figure


def test_cdf_panels_one_per_metric_one_line_per_run_with_shared_legend():
    curve = (np.array([1.0, 2.0]), np.array([0.0, 1.0]))
    fig = figures.cdf_figure({"TTFT (ms)": {"a": curve, "b": curve}, "TPOT (ms)": {"a": curve},
                              "ITL (ms)": {"a": (np.zeros(0), np.zeros(0))}})
    assert [t.name for t in fig.data] == ["a", "b", "a"]  # the empty ITL panel is left out
    assert [t.showlegend for t in fig.data] == [True, True, False]
    assert fig.data[0].line.color == fig.data[2].line.color
    assert [a.text for a in fig.layout.annotations] == ["TTFT (ms)", "TPOT (ms)"]
    scales = [b.args[0]["xaxis2.type"] for b in fig.layout.updatemenus[0].buttons]
    assert scales == ["linear", "log"]


def test_step_timeline_has_one_trace_per_phase_present_and_caps_points():
    n = 30_000
    phase = np.where(np.arange(n) % 100 == 0, "prefill", "decode")
    duration = np.where(phase == "prefill", 0.05, 0.01)
    fig, shown = figures.step_timeline_figure(np.arange(n) * 0.01, duration, phase,
                                              max_points=2_000)
    assert [t.name for t in fig.data] == ["prefill", "decode"]
    assert shown <= 2_002 and shown == sum(len(t.x) for t in fig.data)
    assert np.allclose(fig.data[0].y, 50.0)  # milliseconds
    # a categorical's codes with its names draw the same figure
    names = ["prefill", "decode", "mixed"]
    codes = np.array([names.index(p) for p in phase])
    by_code, shown_by_code = figures.step_timeline_figure(np.arange(n) * 0.01, duration, codes,
                                                          max_points=2_000, names=names)
    assert shown_by_code == shown and by_code.to_json() == fig.to_json()


def test_time_share_pie_drops_empty_parts():
    fig = figures.time_share_figure({"prefill": 1.0, "decode": 3.0, "mixed": 0.0, "idle": 1.0},
                                    "t")
    assert list(fig.data[0].labels) == ["prefill", "decode", "idle"]
    assert list(fig.data[0].values) == [1.0, 3.0, 1.0]


def test_batch_histogram_shares_of_steps_and_of_time():
    fig = figures.batch_histogram_figure(np.array([1, 1, 4]), np.array([1.0, 1.0, 2.0]))
    steps, busy = fig.data
    assert list(steps.x) == [1, 4]
    assert np.allclose(steps.y, [2 / 3, 1 / 3]) and np.allclose(busy.y, [0.5, 0.5])


def _sweep_table() -> pd.DataFrame:
    rows = []
    for config, slope in (("A", 1.0), ("B", 2.0)):
        for rate in (1.0, 2.0, 4.0):
            rows.append({"config": config, "request_rate": rate,
                         "request_throughput": rate, "output_token_throughput": 100 * rate,
                         **{col: slope * rate for col, _ in LATENCY_CHOICES},
                         "slo_attainment": 1.0 if rate < 4 else 0.5})
    return pd.DataFrame(rows)


def test_tradeoff_curves_per_configuration_plus_the_frontier():
    fig = tradeoff_figure(_sweep_table())
    names = [t.name for t in fig.data]
    assert names == ["A", "B", "Pareto frontier"]
    assert list(fig.data[0].x) == [100.0, 200.0, 400.0]
    # B is worse than A at every throughput: the frontier is A's curve
    assert list(fig.data[2].x) == [100.0, 200.0, 400.0] and list(fig.data[2].y) == [1, 2, 4]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == [label for _, label in LATENCY_CHOICES]
    assert len(buttons[0].args[0]["y"]) == 3


def test_attainment_figure_one_line_per_configuration():
    fig = attainment_figure(_sweep_table())
    assert [t.name for t in fig.data] == ["A", "B"]
    assert list(fig.data[0].y) == [1.0, 1.0, 0.5]
