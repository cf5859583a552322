"""Property: every trace reader, fed random bytes, random JSON values or random mutations of
valid lines, either parses correctly or raises one clean WorkloadError line naming the file
(and the line, for a line's problem); never a traceback, never a malformed line accepted."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchsim.sim.workload.traces import FORMATS, MAX_PRIORITY, read_trace
from batchsim.sim.workload.workload import WorkloadError

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
CHARS = st.sampled_from([*list('{}[],:"\\ -+.eE0123456789aNI\t\r'), "\n", "\x00", "é"])


def _read(data: bytes, fmt: str | None = None):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t"
        path.write_bytes(data)
        try:
            return str(path), read_trace(path).__dict__ if fmt is None else None
        except WorkloadError as e:
            message = str(e)
            assert "\n" not in message and message.startswith(str(path)), message
            return str(path), message


def _native_line_ok(text: str) -> tuple[float, int, int] | None:
    """The reference: the native format's rules on one line, with strict JSON."""
    def refuse(_name):
        raise ValueError

    try:
        row = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None

    def num(key):
        v = row.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        if isinstance(v, int) and abs(v) > 2**53:
            return None
        return float(v) if math.isfinite(v) else None

    t, i, o = num("arrival_s"), num("input_tokens"), num("output_tokens")
    if t is None or t < 0 or i is None or o is None:
        return None
    if not (i > 0 and o > 0 and i.is_integer() and o.is_integer()):
        return None
    if "priority" in row:
        p = row["priority"]
        if isinstance(p, bool) or not isinstance(p, int | float) or (
                isinstance(p, float) and not p.is_integer()) or abs(p) > MAX_PRIORITY:
            return None
    if "id" in row and (isinstance(row["id"], bool) or not isinstance(row["id"], str | int)):
        return None
    h = row.get("hash_ids")
    if h is not None and (not isinstance(h, list) or not all(
            type(x) is int and -2**63 <= x < 2**63 for x in h)):
        return None
    return t, int(i), int(o)


def _check_native(lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")
    path, result = _read(data)
    expected = []
    bad = []
    for number, line in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
        if not line.strip():
            continue
        parsed = _native_line_ok(line)
        (bad.append(number) if parsed is None else expected.append(parsed))
    if isinstance(result, str):
        if bad:
            assert any(f"{path}:{n}:" in result for n in bad), (result, bad)
        else:  # a file-level problem: no requests at all, or out-of-horizon values
            assert not expected or "no requests" in result or "larger" in result, result
        return
    assert not bad, f"accepted malformed lines {bad}"
    got = sorted(zip(result["arrival_s"].tolist(), result["input_tokens"].tolist(),
                     result["output_tokens"].tolist(), strict=True))
    assert got == sorted(expected)


VALID = st.builds(lambda t, i, o: json.dumps({"arrival_s": t, "input_tokens": i,
                                              "output_tokens": o}),
                  st.floats(0, 1e6), st.integers(1, 10**6), st.integers(1, 10**6))


@st.composite
def mutated(draw) -> str:
    line = draw(VALID)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "insert", "replace_value", "strip"]))
        k = draw(st.integers(0, max(0, len(line) - 1)))
        if op == "delete" and line:
            line = line[:k] + line[k + 1:]
        elif op == "insert":
            line = line[:k] + draw(CHARS) + line[k:]
        elif op == "strip":
            line = line.strip("{}")
        else:
            row = json.loads(line) if _native_line_ok(line) else {"arrival_s": 0}
            key = draw(st.sampled_from(["arrival_s", "input_tokens", "output_tokens",
                                        "priority", "id", "hash_ids"]))
            row[key] = draw(JSON)
            line = json.dumps(row)
    return line


@SETTINGS
@given(st.lists(VALID, min_size=1, max_size=4), st.lists(mutated(), min_size=1, max_size=3),
       st.randoms())
def test_mutated_native_lines(valid, bad, rnd):
    lines = valid + bad
    rnd.shuffle(lines)
    _check_native(lines)


@SETTINGS
@given(st.lists(JSON.map(lambda v: json.dumps(v)), min_size=1, max_size=4))
def test_random_json_values_as_native_lines(lines):
    _check_native(['{"arrival_s": 0, "input_tokens": 1, "output_tokens": 1}', *lines])


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from([None, *FORMATS]))
def test_random_bytes_to_every_reader(data, fmt):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t"
        path.write_bytes(data)
        try:
            from batchsim.sim.workload.transform import TraceOptions

            workload = read_trace(path, TraceOptions(format=fmt))
        except WorkloadError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)
            return
        assert len(workload) > 0 and np.isfinite(workload.arrival_s).all()
        assert (workload.input_tokens > 0).all() and (workload.output_tokens > 0).all()


HEADERS = {"azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
           "burstgpt": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
           "vidur": "arrived_at,num_prefill_tokens,num_decode_tokens"}
ROWS = {"azure": "2023-11-16 18:15:46.6805900,{i},{o}", "burstgpt": "{t},ChatGPT,{i},{o},1,x",
        "vidur": "{t},{i},{o}"}


@SETTINGS
@given(st.sampled_from(sorted(HEADERS)), st.lists(st.tuples(st.integers(0, 99),
                                                            st.integers(1, 99),
                                                            st.integers(1, 99)), min_size=1,
                                                  max_size=4),
       st.lists(st.tuples(st.integers(0, 60), CHARS), max_size=3))
def test_mutated_csv_rows(fmt, rows, edits):
    text = HEADERS[fmt] + "\n" + "".join(ROWS[fmt].format(t=t, i=i, o=o) + "\n"
                                         for t, i, o in rows)
    body_start = len(HEADERS[fmt]) + 1
    for position, char in edits:
        k = body_start + position % max(1, len(text) - body_start)
        text = text[:k] + char + text[k:]
    _path, result = _read(text.encode("utf-8"))
    if isinstance(result, str):
        return  # a clean one-line error naming the file (checked in _read)
    assert len(result["arrival_s"]) <= len(text.splitlines())
    assert (result["input_tokens"] > 0).all() and np.isfinite(result["arrival_s"]).all()


@SETTINGS
@given(st.lists(st.builds(lambda t, i, o, h: json.dumps({"timestamp": t, "input_length": i,
                                                        "output_length": o, "hash_ids": h}),
                          st.integers(0, 10**9), st.integers(0, 10**5), st.integers(0, 10**5),
                          st.lists(st.integers(-2**70, 2**70), max_size=3)),
                min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 400), CHARS), max_size=2))
def test_mutated_mooncake_lines(lines, edits):
    text = "".join(line + "\n" for line in lines)
    for position, char in edits:
        k = position % len(text)
        text = text[:k] + char + text[k:]
    _path, result = _read(text.encode("utf-8"))
    reference_bad = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=lambda _: (_ for _ in ()).throw(ValueError()))
            ok = isinstance(row, dict) and all(
                type(row.get(k)) in (int, float) for k in ("timestamp", "input_length",
                                                           "output_length"))
            hashes = row.get("hash_ids") if isinstance(row, dict) else None
            ok = ok and (hashes is None or (isinstance(hashes, list) and all(
                type(x) is int and -2**63 <= x < 2**63 for x in hashes)))
        except ValueError:
            ok = False
        if not ok:
            reference_bad.append(number)
    if not isinstance(result, str):
        assert not reference_bad, f"accepted malformed lines {reference_bad}"
