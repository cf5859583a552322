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
