"""Numbers and labels as the reports print them."""

from __future__ import annotations

import pytest

from batchsim.reports.fmt import change, metric_label, number, percent


@pytest.mark.parametrize(("value", "text"), [
    (305970.2, "305,970"), (5.333333333333333, "5.33"), (617.27, "617.3"), (0.1484, "0.148"),
    (3000, "3,000"), (0.0, "0"), (float("nan"), "–"), (True, "True"),
])
def test_number_has_a_precision_for_its_size(value, text):
    """No 3.06e+05 and no 5.333333333333333 in a table."""
    assert number(value) == text


def test_percent_and_change():
    """CV errors read 14.8%; a change within a factor of two is a percentage, beyond it a ratio
    (a 99.995% drop is not `-100.0%`)."""
    assert percent(0.1484) == "14.8%" and percent(None) == "n/a"
    assert change(110.0, 100.0) == "+10.0%"
    assert change(14.66, 305970.0) == "÷20,871"
    assert change(893.7, 417.3) == "×2.14"
    assert change(1.0, 0.0) is None


@pytest.mark.parametrize(("key", "label"), [
    ("e2el_ms.p99", "E2EL p99 (ms)"), ("ttft_p99_ms", "TTFT p99 (ms)"),
    ("request_throughput", "request throughput (req/s)"), ("something_else", "something_else"),
])
def test_metric_labels(key, label):
    assert metric_label(key) == label


def test_latency_headlines_switch_to_seconds_at_ten_seconds():
    from batchsim.reports.fmt import latency

    assert latency(8.34) == "8.3 ms" and latency(9_999.9) == "9,999.9 ms"
    assert latency(98_433.4) == "98.4 s" and latency(305_970.0) == "306.0 s"


def test_labels_for_people_in_every_table():
    """Shipped files by name, shares as percentages, SLOs in words."""
    from batchsim.reports.fmt import FRACTIONS, display_path
    from batchsim.sim.shipped import default_profile
    from batchsim.sim.sweep.analysis import slo_text

    assert display_path(str(default_profile())) == f"{default_profile().name} (shipped)"
    assert display_path("my/own.json") == "my/own.json"
    assert {"gpu_busy_fraction", "slo_attainment"} <= FRACTIONS
    assert metric_label("gpu_busy_fraction") == "GPU busy"
    assert slo_text({"ttft_ms": 500.0, "tpot_ms": 50.0}) == "TTFT ≤ 500 ms and TPOT ≤ 50 ms"
