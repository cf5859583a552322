"""Trace files in the formats users bring: detect the format, parse in bulk, return a Workload.

  format    file   arrival, input, output (+ optional)                      time unit
  native    JSONL  arrival_s, input_tokens, output_tokens (+ id, priority,   seconds
                   hash_ids)
  mooncake  JSONL  timestamp, input_length, output_length (+ hash_ids)       ms
  azure     CSV    TIMESTAMP, ContextTokens, GeneratedTokens                 wall clock
  burstgpt  CSV    Timestamp, Request tokens, Response tokens (+ Model, ...) seconds
  vidur     CSV    arrived_at, num_prefill_tokens, num_decode_tokens         seconds
  vllm      JSONL  queued_ts, input_toks, output_toks (+ request_id and the   seconds
                   server's other timestamps: a vLLM request log, request_log.py)
  llmservingsim JSONL arrival_time_ns, input_toks, output_toks               ns
                   (+ input_tok_ids, ignored)

A million-line file must load in seconds, so no Python object is made per row where it can be
avoided: CSVs go through pandas' C parser in chunks; Mooncake lines are cut by regular
expressions over 16 MB chunks, and only when that fast path meets something it cannot vouch for
is the file read again with one json.loads per line, which also finds the line of the problem.
Line numbers are the file's own (1-based, header counted). Decisions (docs/TRACES.md): imported
traces start at their first request; zero lengths (BurstGPT logs failed requests with 0 response
tokens) are dropped with one warning; out-of-order timestamps are sorted with a warning, or
rejected with `strict`. Native traces keep their arrival_s and their stricter checks.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import stat
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from batchsim.sim.shipped import resolve
from batchsim.sim.workload import jsonl_fast, request_log
from batchsim.sim.workload.transform import TraceOptions, transform
from batchsim.sim.workload.workload import PrefixBlocks, Workload, WorkloadError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_MAX_TOKENS = 2.0**53  # float64 holds every integer up to here exactly
_MAX_TIME = 1e21  # a time field in the trace's own unit (epoch ns are ~1.7e18)
_CSV_CHUNK_ROWS = 1 << 18
_JSONL_CHUNK_BYTES = 1 << 24
_INT64 = np.iinfo(np.int64)
MAX_PRIORITY = 2**31 - 1  # |priority| at most this (a server's int32 field)


@dataclass(frozen=True)
class TraceFormat:
    name: str
    kind: Literal["csv", "jsonl"]
    time: str  # column (CSV) or key (JSONL) of the arrival time
    input: str
    output: str
    time_unit: Literal["s", "ms", "ns", "datetime"]


FORMATS: dict[str, TraceFormat] = {f.name: f for f in (
    TraceFormat("native", "jsonl", "arrival_s", "input_tokens", "output_tokens", "s"),
    TraceFormat("mooncake", "jsonl", "timestamp", "input_length", "output_length", "ms"),
    TraceFormat("azure", "csv", "TIMESTAMP", "ContextTokens", "GeneratedTokens", "datetime"),
    TraceFormat("burstgpt", "csv", "Timestamp", "Request tokens", "Response tokens", "s"),
    TraceFormat("vidur", "csv", "arrived_at", "num_prefill_tokens", "num_decode_tokens", "s"),
    TraceFormat("vllm", "jsonl", request_log.TIME_KEY, request_log.INPUT_KEY,
                request_log.OUTPUT_KEY, "s"),
    TraceFormat("llmservingsim", "jsonl", "arrival_time_ns", "input_toks", "output_toks", "ns"),
)}
# divisor from a format's time unit to seconds (datetimes are parsed to seconds already)
_PER_SECOND = {"s": 1.0, "ms": 1e3, "ns": 1e9, "datetime": 1.0}


@dataclass
class _Rows:
    """Parsed columns in file order, before the checks shared by every format."""

    time: np.ndarray  # float64 in the format's unit; datetime: seconds since the epoch
    inputs: np.ndarray  # float64, NaN = missing
    outputs: np.ndarray  # float64, NaN = missing
    lines: np.ndarray  # int64 file line of each row
    hash_ids: PrefixBlocks | None = None
    ids: list[str] | None = None  # native and vllm only
    priority: np.ndarray | None = None  # native only
    prefix_group: np.ndarray | None = None  # native only: int64, -1 = none
    prefix_tokens: np.ndarray | None = None  # native only: int64, 0 = none


def load_trace(path: str | Path, time_scale: float = 1.0,
               options: TraceOptions | None = None) -> Workload:
    """Read a trace in any known format; arrival times are multiplied by time_scale.

    `options` (window, rate, filters, sampling, format, strictness) replaces time_scale when
    given. Native traces keep their arrival_s; imported ones start at their first request.
    """
    return read_trace(path, options if options is not None else TraceOptions(time_scale))


def read_trace(path: str | Path, options: TraceOptions | None = None) -> Workload:
    """Read a trace in any known format and apply options' window, speed, filters, sampling.

    A pipe (a FIFO, /dev/stdin) can be read only once, and a trace is read more than once
    (detection, then the fast path, perhaps the slow one): it is copied to a temporary file
    first, and every message still names the pipe."""
    options = options or TraceOptions()
    file = resolve(path, "traces")  # a bare name that is not a file here: a shipped trace
    if _is_pipe(file):
        with tempfile.TemporaryDirectory(prefix="batchsim-pipe-") as folder:
            copy = Path(folder) / "trace"
            _spool(file, copy)
            try:
                workload = _read_file(copy, options)
            except WorkloadError as e:
                raise WorkloadError(str(e).replace(str(copy), str(file))) from None
        workload.source = str(file)
        workload.provenance["path"] = str(file)
        return workload
    return _read_file(file, options)


_MAX_PIPE_BYTES = 8 << 30


def _is_pipe(file: Path) -> bool:
    try:
        mode = file.stat().st_mode
    except OSError:
        return False  # _first_line words the error
    if stat.S_ISDIR(mode):
        raise WorkloadError(f"{file}: is a folder, not a trace file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise WorkloadError(f"{file}: not a regular file or a pipe")
    return stat.S_ISFIFO(mode)


def _spool(pipe: Path, copy: Path) -> None:
    """Copy everything the pipe gives, once, up to _MAX_PIPE_BYTES."""
    total = 0
    with pipe.open("rb") as src, copy.open("wb") as dst:
        while block := src.read(1 << 20):
            total += len(block)
            if total > _MAX_PIPE_BYTES:
                raise WorkloadError(f"{pipe}: more than {_MAX_PIPE_BYTES >> 30} GiB from a "
                                    "pipe; save the trace to a file")
            dst.write(block)


def _read_file(file: Path, options: TraceOptions) -> Workload:
    fmt, header_line, names = detect_format(file, options.format)
    rows: _Rows | None
    if fmt.kind == "csv":
        rows = _csv_rows(file, fmt, header_line, names)
    elif fmt.name == "vllm":
        rows = _log_rows(file)
    else:
        rows = _fast_jsonl_rows(file, fmt)
        if rows is None or (fmt.name == "native" and not _native_valid(rows)):
            rows = _json_rows(file, fmt)  # also words any error as the native format does
    return transform(_to_workload(file, fmt, rows, options.strict), options)


def detect_format(file: Path, forced: str | None = None) -> tuple[TraceFormat, int, list[str]]:
    """The format, the line number of the first non-blank line and its field names.

    JSON lines are told apart by their time key, CSVs by a header naming all three columns
    (extra columns are fine). `forced` skips the guess but still needs the columns.
    """
    if forced is not None and forced not in FORMATS:
        raise WorkloadError(f"unknown trace format {forced!r}; known: {', '.join(FORMATS)}")
    number, text = _first_line(file)
    where = f"{file}:{number}"
    if text.startswith("{"):
        names, kind = list(_json_object(text, where)), "jsonl"
    else:
        names, kind = [c.strip().strip('"').strip() for c in text.split(",")], "csv"
    candidates = [FORMATS[forced]] if forced else list(FORMATS.values())
    for fmt in candidates:
        needed = {fmt.time} if fmt.kind == "jsonl" else {fmt.time, fmt.input, fmt.output}
        if fmt.kind == kind and needed <= set(names):
            return fmt, number, names
    if forced:
        fmt = FORMATS[forced]
        raise WorkloadError(f"{where}: not a {forced} trace: expected a {fmt.kind.upper()} with "
                            f"{fmt.time}, {fmt.input}, {fmt.output}; found {', '.join(names)}")
    known = "; ".join(f"{f.name}: {f.time},{f.input},{f.output}" for f in FORMATS.values())
    raise WorkloadError(f"{where}: {', '.join(names)[:120]!r} matches no known trace format "
                        f"({known}); see docs/TRACES.md")


def _first_line(file: Path) -> tuple[int, str]:
    try:
        handle = file.open(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise WorkloadError(f"{file}: cannot read trace: {e.strerror}") from None
    with handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                return number, text.strip()
    raise WorkloadError(f"{file}: trace holds no requests")


# ---- CSV -----------------------------------------------------------------------------------

def _csv_rows(file: Path, fmt: TraceFormat, header_line: int, names: list[str]) -> _Rows:
    """Numbers parsed in C; if a cell is not a number, read again as text to say where."""
    columns = [names.index(c) for c in (fmt.time, fmt.input, fmt.output)]
    starts = _record_lines(file, header_line)
    try:
        return _concat(_csv_chunks(file, fmt, header_line, columns, numeric=True, starts=starts))
    except WorkloadError:
        raise
    except (ValueError, KeyError, TypeError, IndexError):
        pass  # a non-numeric cell, a line of spaces, a short row: the text pass says where
    try:
        return _concat(_csv_chunks(file, fmt, header_line, columns, numeric=False,
                                   starts=starts))
    except WorkloadError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as e:
        # pandas' C reader on a damaged file: a stray quote or carriage return, too few
        # columns; it raises these with its own words, which do not name the file
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WorkloadError(f"{file}: cannot parse CSV: {detail}") from None


def _record_lines(file: Path, header_line: int) -> np.ndarray | None:
    """The file line where each record after the header starts, when a quoted cell may span
    lines (the file has a quote); None when every record is one line (the fast common case)."""
    with file.open("rb") as f:
        if not any(b'"' in chunk for chunk in iter(lambda: f.read(_JSONL_CHUNK_BYTES), b"")):
            return None
    starts: list[int] = []
    with file.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        previous = 0  # line_num: the line where the record just read ends
        try:
            for _ in reader:
                starts.append(previous + 1)
                previous = reader.line_num
        except csv.Error:
            return None  # pandas words the error
    return np.asarray(starts[header_line:], dtype=np.int64)


def _csv_chunks(file: Path, fmt: TraceFormat, header_line: int, columns: list[int],
                numeric: bool, starts: np.ndarray | None = None) -> Iterator[_Rows]:
    number: type = np.float64 if numeric else str
    dtypes = {columns[0]: str if fmt.time_unit == "datetime" else number,
              columns[1]: number, columns[2]: number}
    import pandas as pd  # only CSV traces need it: JSONL ones and the CLI's parsing do not

    # skip_blank_lines=False keeps one row per line, so row k is line header_line + 1 + k
    reader = pd.read_csv(file, header=None, skiprows=header_line, usecols=columns,
                         dtype=dtypes, skip_blank_lines=False, chunksize=_CSV_CHUNK_ROWS,
                         encoding="utf-8", encoding_errors="replace")
    first = header_line + 1
    row = 0
    with reader:
        for chunk in reader:
            lines = np.arange(first, first + len(chunk), dtype=np.int64)
            if starts is not None and row + len(chunk) <= len(starts):
                lines = starts[row:row + len(chunk)]  # quoted cells spanning lines
            first += len(chunk)
            row += len(chunk)
            text = [chunk[c] if numeric else _stripped(chunk[c]) for c in columns]
            if fmt.time_unit == "datetime":
                text[0] = _stripped(text[0])
            blank = (text[0].isna() & text[1].isna() & text[2].isna()).to_numpy()
            lines = lines[~blank]
            text = [t[~blank] for t in text]
            if fmt.time_unit == "datetime":
                time = _datetimes(file, text[0], lines)
            else:
                time = _numbers(file, text[0], fmt.time, lines, numeric)
            yield _Rows(time, _numbers(file, text[1], fmt.input, lines, numeric),
                        _numbers(file, text[2], fmt.output, lines, numeric), lines)


def _stripped(text: pd.Series) -> pd.Series:
    """Surrounding spaces removed; an empty cell becomes missing."""
    return text.str.strip().replace("", None)


def _numbers(file: Path, column: pd.Series, name: str, lines: np.ndarray,
             numeric: bool) -> np.ndarray:
    if numeric:  # already parsed by the C reader
        return column.to_numpy(dtype=np.float64)
    return _text_numbers(file, column, name, lines)


def _text_numbers(file: Path, text: pd.Series, name: str, lines: np.ndarray) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values) & text.notna().to_numpy())
    if len(bad):
        k = int(bad[0])
        raise WorkloadError(f"{file}:{lines[k]}: {name} is not a number: {text.iloc[k]!r}")
    return values


def _datetimes(file: Path, text: pd.Series, lines: np.ndarray) -> np.ndarray:
    """Seconds since the epoch of ISO-8601 wall-clock strings (an offset, if any, honoured)."""
    import pandas as pd

    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    bad = np.flatnonzero(parsed.isna().to_numpy() & text.notna().to_numpy())
    if len(bad):
        k = int(bad[0])
        raise WorkloadError(f"{file}:{lines[k]}: unparsable timestamp {text.iloc[k]!r} "
                            "(expected e.g. 2023-11-16 18:15:46.6805900)")
    epoch = pd.Timestamp(0, tz="UTC")
    return (parsed - epoch).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)


def _concat(chunks: Iterator[_Rows]) -> _Rows:
    parts = list(chunks)
    if not parts:
        empty = np.empty(0)
        return _Rows(empty, empty, empty, np.empty(0, dtype=np.int64))
    hashes = [p.hash_ids for p in parts]
    priorities = [p.priority for p in parts if p.priority is not None]
    grouped = all(p.prefix_group is not None for p in parts)
    rows = _Rows(np.concatenate([p.time for p in parts]),
                 np.concatenate([p.inputs for p in parts]),
                 np.concatenate([p.outputs for p in parts]),
                 np.concatenate([p.lines for p in parts]),
                 _concat_blocks(hashes) if all(h is not None for h in hashes) else None,
                 [i for p in parts for i in p.ids or ()] if parts[0].ids is not None else None,
                 np.concatenate(priorities) if len(priorities) == len(parts) else None)
    if grouped:  # every line of a fast-path read has the same keys
        rows.prefix_group = np.concatenate([p.prefix_group for p in parts])
        rows.prefix_tokens = np.concatenate([p.prefix_tokens for p in parts])
    return rows


def _concat_blocks(parts: list[PrefixBlocks | None]) -> PrefixBlocks:
    blocks = [p for p in parts if p is not None]
    values = np.concatenate([b.values for b in blocks])
    shifts = np.cumsum([0] + [len(b.values) for b in blocks[:-1]])
    offsets = np.concatenate([[0]] + [b.offsets[1:] + s for b, s in zip(blocks, shifts,
                                                                         strict=True)])
    return PrefixBlocks(values.astype(np.int64), offsets.astype(np.int64))


# ---- JSON lines ----------------------------------------------------------------------------

def _log_rows(file: Path) -> _Rows:
    """A vLLM request log: every timestamp checked (request_log.py); arrivals are queued_ts."""
    log_ = request_log.read_request_log(file)
    return _Rows(log_.stamps[request_log.TIME_KEY], log_.input_tokens, log_.output_tokens,
                 log_.lines, ids=log_.ids)


def _fast_jsonl_rows(file: Path, fmt: TraceFormat) -> _Rows | None:
    """JSON lines checked and cut by regular expressions (sim.workload.jsonl_fast), or None
    where that cannot vouch for every line; the caller then re-reads with json.loads per line,
    which also names the line of any problem."""
    first = jsonl_fast.first_nonblank(file)
    native = fmt.name == "native"
    numeric = {fmt.time, fmt.input, fmt.output} | (
        {"priority", "prefix_group", "prefix_len"} if native else set())
    captured = ("id", "hash_ids") if native else ("hash_ids",)
    shape = jsonl_fast.line_shape(first, numeric, captured) if first is not None else None
    if shape is None or not {fmt.time, fmt.input, fmt.output} <= set(shape.extract):
        return None  # e.g. a required key missing: the slow path says at which line
    parts: list[_Rows] = []
    line0 = 0
    with file.open("rb") as f:
        for read in jsonl_fast.read_chunks(f, shape, _JSONL_CHUNK_BYTES):
            if read is None:
                return None
            chunk, values = read
            lines, line0 = _nonblank_lines(chunk, line0)
            if any(len(v) != len(lines) for v in values.values()):
                return None
            rows = _Rows(jsonl_fast.numbers(values[fmt.time]),
                         jsonl_fast.numbers(values[fmt.input]),
                         jsonl_fast.numbers(values[fmt.output]), lines)
            if "hash_ids" in values:
                trusted, rows.hash_ids = _fast_blocks(values["hash_ids"], len(lines))
                if not trusted:
                    return None
            if native:
                if "priority" in values:
                    priority = jsonl_fast.numbers(values["priority"])
                    if not _priorities_valid(priority):
                        return None  # the slow path names the line
                    rows.priority = priority.astype(np.int64)
                else:
                    rows.priority = np.zeros(len(lines), dtype=np.int64)
                if "id" in values:
                    rows.ids = [i.decode("utf-8", "replace") for i in values["id"]]
                if ("prefix_group" in values) != ("prefix_len" in values):
                    return None  # the slow path names the line
                if "prefix_group" in values:
                    group = jsonl_fast.numbers(values["prefix_group"])
                    length = jsonl_fast.numbers(values["prefix_len"])
                    if not _prefixes_valid(group, length, rows.inputs):
                        return None
                    rows.prefix_group = group.astype(np.int64)
                    rows.prefix_tokens = length.astype(np.int64)
            parts.append(rows)
    return _concat(iter(parts))


def _nonblank_lines(chunk: bytes, line0: int) -> tuple[np.ndarray, int]:
    """File line numbers of the chunk's non-blank lines, and the last line number it holds."""
    buf = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    if not chunk.endswith(b"\n"):
        ends = np.append(ends, len(buf))  # the file's last line, without a newline
    starts = np.concatenate(([0], ends[:-1] + 1))
    length = ends - starts
    carriage = buf[np.minimum(starts, len(buf) - 1)] == ord("\r")
    blank = (length == 0) | ((length == 1) & carriage)
    return line0 + 1 + np.flatnonzero(~blank), line0 + len(ends)


def _fast_blocks(found: list[bytes], n: int) -> tuple[bool, PrefixBlocks | None]:
    """(trusted, the chunk's hash_ids: one list per line); the grammar has checked that each
    is a list of JSON integers, so only their int64 range is left to check."""
    if len(found) != n:
        return False, None
    counts = np.array([h.count(b",") + 1 if h.strip() else 0 for h in found], dtype=np.int64)
    text = b",".join(h for h in found if h.strip()).decode("ascii", "replace")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns, not raises, on a value it cannot read
            values = (np.fromstring(text, dtype=np.int64, sep=",") if text
                      else np.empty(0, dtype=np.int64))
    except (ValueError, DeprecationWarning, OverflowError):
        return False, None
    if len(values) != counts.sum():
        return False, None
    if len(values) and (values.max() == _INT64.max or values.min() == _INT64.min):
        return False, None  # numpy clips integers beyond int64 silently: the slow path checks
    return True, PrefixBlocks(values, np.concatenate(([0], np.cumsum(counts))).astype(np.int64))


def _json_rows(file: Path, fmt: TraceFormat) -> _Rows:
    """One json.loads per line: every native trace, and any JSONL the fast path declined."""
    native = fmt.name == "native"
    time: list[float] = []
    inputs: list[float] = []
    outputs: list[float] = []
    lines: list[int] = []
    ids: list[str] = []
    priority: list[int] = []
    prefixes: list[tuple[int, int]] = []
    hashes: list[list[int] | None] = []
    with file.open(encoding="utf-8-sig", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{file}:{number}"
            row = _json_object(text, where)
            # times may be large integers (epoch nanoseconds); their size is checked once they
            # are seconds (MAX_ARRIVAL_S), so only lengths get the integer bound here
            time.append(_number(row, fmt.time, where, minimum=0.0 if native else None,
                                max_int=_MAX_TIME))
            if native:  # the native format's own, stricter checks
                inputs.append(_count(row, fmt.input, where))
                outputs.append(_count(row, fmt.output, where))
                priority.append(_priority(row, where))
                ids.append(_id(row, where, len(ids)))
                prefixes.append(_prefix(row, where, inputs[-1]))
            else:
                inputs.append(_number(row, fmt.input, where))
                outputs.append(_number(row, fmt.output, where))
            hashes.append(_hash_list(row, where))
            lines.append(number)
    blocks = None
    if any(h is not None for h in hashes):
        counts = [len(h or ()) for h in hashes]
        flat = np.fromiter((x for h in hashes for x in h or ()), dtype=np.int64,
                           count=sum(counts))
        blocks = PrefixBlocks(flat, np.concatenate(([0], np.cumsum(counts))).astype(np.int64))
    rows = _Rows(np.asarray(time, dtype=np.float64), np.asarray(inputs, dtype=np.float64),
                 np.asarray(outputs, dtype=np.float64), np.asarray(lines, dtype=np.int64),
                 blocks, ids if native else None,
                 np.asarray(priority, dtype=np.int64) if native else None)
    if any(g >= 0 for g, _ in prefixes):
        pairs = np.asarray(prefixes, dtype=np.int64).reshape(-1, 2)
        rows.prefix_group, rows.prefix_tokens = pairs[:, 0], pairs[:, 1]
    return rows


def _native_valid(rows: _Rows) -> bool:
    """The native format's rules, checked in bulk: arrival_s >= 0, whole positive lengths,
    whole priorities within MAX_PRIORITY."""
    lengths = np.concatenate((rows.inputs, rows.outputs))
    return bool((rows.time >= 0).all() and np.isfinite(rows.time).all()
                and (lengths > 0).all() and (lengths == np.floor(lengths)).all()
                and (lengths <= _MAX_TOKENS).all())


def _prefixes_valid(group: np.ndarray, length: np.ndarray, inputs: np.ndarray) -> bool:
    """prefix_group a whole number >= 0, prefix_len a whole number in [1, input_tokens]."""
    return bool((group >= 0).all() and (group == np.floor(group)).all()
                and (group < 2.0**53).all() and (length >= 1).all()
                and (length == np.floor(length)).all() and (length <= inputs).all())


def _prefix(row: dict, where: str, input_tokens: float) -> tuple[int, int]:
    """A native row's (prefix_group, prefix_len), (-1, 0) without them."""
    if "prefix_group" not in row and "prefix_len" not in row:
        return -1, 0
    if "prefix_group" not in row or "prefix_len" not in row:
        raise WorkloadError(f"{where}: prefix_group and prefix_len go together (the shared "
                            "prompt's group and its length in tokens)")
    group, length = row["prefix_group"], row["prefix_len"]
    if type(group) is not int or not 0 <= group < 2**53:
        raise WorkloadError(f"{where}: prefix_group must be an integer >= 0, got "
                            f"{_short(group)}")
    if type(length) is not int or not 1 <= length <= input_tokens:
        raise WorkloadError(f"{where}: prefix_len must be an integer from 1 to input_tokens "
                            f"({int(input_tokens)}), got {_short(length)}")
    return group, length


def _priorities_valid(priority: np.ndarray) -> bool:
    return bool((np.abs(priority) <= MAX_PRIORITY).all()
                and (priority == np.floor(priority)).all())


def _priority(row: dict, where: str) -> int:
    if "priority" not in row:
        return 0
    value = row["priority"]
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not value.is_integer()) or abs(value) > MAX_PRIORITY:
        raise WorkloadError(f"{where}: priority must be an integer from {-MAX_PRIORITY} to "
                            f"{MAX_PRIORITY}, got {_short(value)}")
    return int(value)


def _id(row: dict, where: str, index: int) -> str:
    value = row.get("id", index)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WorkloadError(f"{where}: id must be a string, got {_short(value)}")
    return str(value)


def _short(value: object) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def _number(row: dict, key: str, where: str, minimum: float | None = None,
            default: float | None = None, max_int: float = _MAX_TOKENS) -> float:
    if key not in row:
        if default is not None:
            return default
        raise WorkloadError(f"{where}: missing field {key!r}")
    value = row[key]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > max_int:
        raise WorkloadError(f"{where}: {key} is too large ({_short(value)})")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WorkloadError(f"{where}: {key} must be a finite number, got {_short(value)}")
    if minimum is not None and value < minimum:
        raise WorkloadError(f"{where}: {key} must be >= {minimum}, got {value!r}")
    return float(value)


def _count(row: dict, key: str, where: str) -> int:
    value = _number(row, key, where)
    if value != int(value) or value <= 0:
        raise WorkloadError(f"{where}: {key} must be a positive integer, got {_short(row[key])}")
    return int(value)


def _hash_list(row: dict, where: str) -> list[int] | None:
    value = row.get("hash_ids")
    if value is None:
        return None
    if not isinstance(value, list) or not all(type(x) is int and -2**63 <= x < 2**63
                                              for x in value):
        raise WorkloadError(f"{where}: hash_ids must be a list of integers (64-bit)")
    return value


# ---- shared checks -------------------------------------------------------------------------

def _to_workload(file: Path, fmt: TraceFormat, rows: _Rows, strict: bool) -> Workload:
    """Check lengths and times, drop zero lengths, order by arrival, convert to seconds."""
    if len(rows.lines) == 0:
        raise WorkloadError(f"{file}: trace holds no requests")
    _check_finite(file, rows.time, fmt.time, rows.lines)
    _check_lengths(file, rows.inputs, fmt.input, rows.lines)
    _check_lengths(file, rows.outputs, fmt.output, rows.lines)
    keep = np.flatnonzero((rows.inputs > 0) & (rows.outputs > 0))
    zero = len(rows.lines) - len(keep)
    if zero:
        log.warning("%s: dropped %d requests with 0 input or output tokens (failed requests)",
                    file, zero)
    if len(keep) == 0:
        raise WorkloadError(f"{file}: every request has 0 input or output tokens")
    order, resorted = _arrival_order(file, rows.time[keep], rows.lines[keep], strict)
    index = keep[order]
    time = rows.time[index]
    if fmt.name != "native":
        time = time - time[0]  # imported traces start at their first request (before the
        # unit change: epoch nanoseconds keep their precision in the differences)
    time = time / _PER_SECOND[fmt.time_unit]
    identity = len(index) == len(rows.lines) and not resorted
    hash_ids = rows.hash_ids
    if hash_ids is not None and not identity:
        hash_ids = hash_ids.take(index)
    return Workload(
        arrival_s=time,
        input_tokens=rows.inputs[index].astype(np.int64),
        output_tokens=rows.outputs[index].astype(np.int64),
        priority=(rows.priority[index] if rows.priority is not None
                  else np.zeros(len(index), dtype=np.int64)),
        ids=None if rows.ids is None else [rows.ids[i] for i in index],
        source=str(file),
        line_numbers=rows.lines[index],
        hash_ids=hash_ids,
        prefix_group=None if rows.prefix_group is None else rows.prefix_group[index],
        prefix_tokens=None if rows.prefix_tokens is None else rows.prefix_tokens[index],
        provenance={"path": str(file), "format": fmt.name, "num_read": len(rows.lines),
                    "dropped_zero_length": zero, "sorted": resorted},
    )


def _check_finite(file: Path, values: np.ndarray, name: str, lines: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        k = int(bad[0])
        problem = f"missing {name}" if np.isnan(values[k]) else f"{name} is not finite"
        raise WorkloadError(f"{file}:{lines[k]}: {problem}")


def _check_lengths(file: Path, values: np.ndarray, name: str, lines: np.ndarray) -> None:
    """Token counts must be present, whole, >= 0 and exactly representable."""
    bad = ~(values >= 0) | (values != np.floor(values)) | (values > _MAX_TOKENS)
    if not bad.any():
        return
    k = int(np.flatnonzero(bad)[0])
    v = values[k]
    if np.isnan(v):
        problem = f"missing {name}"
    elif v < 0:
        problem = f"{name} must be >= 0, got {v:g}"
    elif v > _MAX_TOKENS:
        problem = f"{name} is too large ({v:g})"
    else:
        problem = f"{name} must be a whole number, got {v:g}"
    raise WorkloadError(f"{file}:{lines[k]}: {problem}")


def _arrival_order(file: Path, time: np.ndarray, lines: np.ndarray,
                   strict: bool) -> tuple[np.ndarray, bool]:
    """Indices in arrival order (stable: equal timestamps keep file order); True if resorted."""
    back = np.flatnonzero(np.diff(time) < 0)
    if len(back) == 0:
        return np.arange(len(time)), False
    k = int(back[0]) + 1
    if strict:
        raise WorkloadError(f"{file}:{lines[k]}: timestamp earlier than the previous request's "
                            f"(line {lines[k - 1]}); sort the trace, or drop --strict to sort "
                            "it on reading")
    log.warning("%s: timestamps are not sorted (%d steps back, first at line %d); requests "
                "were sorted by arrival", file, len(back), lines[k])
    return np.argsort(time, kind="stable"), True


def _not_json(name: str) -> None:
    """json.loads accepts NaN and Infinity; JSON (RFC 8259) does not, and neither do we."""
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _json_object(text: str, where: str) -> dict:
    """One JSONL line as a dict, or a WorkloadError naming the line."""
    try:
        row = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as e:
        raise WorkloadError(f"{where}: malformed JSON ({e.msg})") from None
    except RecursionError:
        raise WorkloadError(f"{where}: malformed JSON (nested too deeply)") from None
    if not isinstance(row, dict):
        raise WorkloadError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row
