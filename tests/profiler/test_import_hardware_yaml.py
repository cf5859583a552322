"""The TP all-reduce link from LLMServingSim's `<hw>/hardware.yaml` (its `measured.interconnect`
NCCL fit, or `defaults.link_bw` / `link_latency`), under the flags, over the built-in defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from batchsim.policies.base import StepShape, chunk_attn_pairs
from batchsim.profiler.imported.compose import Link
from batchsim.profiler.imported.hardware import (
    DEFAULT_LINK_GBPS,
    DEFAULT_LINK_LATENCY_US,
    tp_link,
)
from tests.profiler.test_import_llmservingsim import (
    DATA,
    US,
    bad,
    composer,
    copy_tiny,
    run_import,
)

MEASURED = {"hardware": "HW", "spec": {"memory_total_gib": 4.0},
            "measured": {"interconnect": {"npus": 2, "collective": "all_reduce",
                                          "fit": {"bandwidth_gbps": 0.032, "latency_ns": 2000}}},
            "defaults": {"link_bw": {"value": 0.032, "source": "measured"},
                         "link_latency": {"value": 2000, "source": "measured"}}}


def write_hw(folder: Path, doc: object) -> Path:
    path = folder.parents[2] / "hardware.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_measured_fit_is_the_link_and_the_flags_win(tmp_path: Path) -> None:
    folder = copy_tiny(tmp_path)
    assert tp_link(folder, None, None, 2).source == "default (assumed)"  # no file yet
    path = write_hw(folder, MEASURED)
    link = tp_link(folder, None, None, 2)
    assert (link.gbps, link.latency_us) == (0.032, 2.0)
    assert str(path) in link.source and "measured.interconnect.fit" in link.source
    flagged = tp_link(folder, 10.0, 1.0, 2)
    assert (flagged.gbps, flagged.latency_us) == (10.0, 1.0)
    assert flagged.source == "--tp-link-gbps / --tp-link-latency-us"
    half = tp_link(folder, None, 7.0, 2)
    assert (half.gbps, half.latency_us) == (0.032, 7.0) and "one of them from the flag" in \
        half.source
    assert tp_link(folder, None, None, 1).source == "default (assumed)"  # tp 1: not read


def test_defaults_block_and_a_single_gpu_file(tmp_path: Path) -> None:
    folder = copy_tiny(tmp_path)
    write_hw(folder, {"defaults": MEASURED["defaults"], "measured": {"interconnect": None}})
    link = tp_link(folder, None, None, 2)
    assert (link.gbps, link.latency_us) == (0.032, 2.0) and "defaults.link_bw" in link.source
    write_hw(folder, {"measured": {"interconnect": None, "interconnect_unavailable": "1 GPU"}})
    link = tp_link(folder, None, None, 2)
    assert (link.gbps, link.latency_us) == (DEFAULT_LINK_GBPS, DEFAULT_LINK_LATENCY_US)
    assert "has no measured interconnect" in link.source


def test_the_measured_link_prices_the_allreduce_worked_on_paper(tmp_path: Path) -> None:
    """16 tokens * 8 hidden * 2 bytes = 256 B at 0.032 GB/s: 2 * 1/2 * 256 / 32e6 = 8 us, plus
    2 hops * 2 us = 12 us, twice per layer, 2 layers: +48 us over tp 1's same tables."""
    folder = copy_tiny(tmp_path)
    write_hw(folder, MEASURED)
    link = tp_link(folder, None, None, 2)
    shape = StepShape(1, 16, 0, chunk_attn_pairs(0, 16), 0)
    t1 = composer(folder, "tiny.json", tp=1).compose(shape)
    t2 = composer(folder, "tiny.json", tp=2,
                  link=Link(link.gbps * 1e9, link.latency_us * 1e-6)).compose(shape)
    assert t2 - t1 == pytest.approx(48 * US)
    doc = json.loads(run_import(tmp_path / "out", folder, "tiny.json", "--tp", "2").read_text())
    assert "0.032 GB/s" in doc["assumptions"]["tp_allreduce"]
    assert "hardware.yaml measured.interconnect.fit" in doc["assumptions"]["tp_allreduce"]


@pytest.mark.parametrize(("doc", "message"), [
    ("{not: yaml: at all", "not a readable hardware.yaml"),
    ({"measured": {"interconnect": {"fit": {"bandwidth_gbps": -1, "latency_ns": 5}}}},
     "measured.interconnect.fit.bandwidth_gbps must be a positive number"),
    ({"defaults": {"link_bw": {"value": 1}, "link_latency": {"value": "soon"}}},
     "defaults.link_latency.value must be a non-negative number"),
])
def test_a_bad_hardware_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         doc: object, message: str) -> None:
    folder = copy_tiny(tmp_path)
    path = folder.parents[2] / "hardware.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    err = bad(tmp_path, capsys, folder, DATA / "configs" / "tiny.json", "--tp", "2")
    assert str(path) in err and message in err
