"""The fast path of JSONL traces: whole chunks checked and cut by two regular expressions.

A trace file written by a program has the same keys in the same order on every line. The first
line (read with json.loads) gives that order; from it a regular expression for exactly that line
is built from JSON's own grammar (RFC 8259: numbers, strings, true/false/null, whitespace), so a
chunk that `fullmatch`es "such lines and empty lines" holds only lines that json.loads parses to
an object with each key exactly once, and the captured values are what json.loads would return.
Anything else (another key order, a nested value, an escaped string, NaN, a brace-less line, a
duplicate key, a line json.loads rejects) makes `read_chunks` return None, and the caller reads
the file again with one json.loads per line, which names the line of any problem. Possessive
quantifiers (Python 3.11) keep both passes linear in the chunk size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

_WS = rb"[ \t\r]*+"
_NUMBER = rb"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+"
_STRING = rb'"(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"'
_SCALAR = rb"(?:%s|%s|true|false|null)" % (_NUMBER, _STRING)
_FLAT_LIST = rb"\[%s(?:%s(?:%s,%s%s)*+)?+%s\]" % (_WS, _SCALAR, _WS, _WS, _SCALAR, _WS)
_INT = rb"-?+(?:0|[1-9][0-9]*+)"
_INT_LIST_INNER = rb"%s(?:%s(?:%s,%s%s)*+)?+%s" % (_WS, _INT, _WS, _WS, _INT, _WS)


def _value_pattern(key: str, value: object, numeric: set[str], captured: tuple[str, ...],
                   int_list: bytes = _INT_LIST_INNER) -> bytes | None:
    """The grammar of one key's value as it must appear on every line; None: not fast."""
    if key in numeric:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return _NUMBER
    if key not in captured:
        return rb"(?:%s|%s)" % (_SCALAR, _FLAT_LIST)
    if key == "id":  # captured as bytes, so no escapes (those lines take the slow path)
        return rb'"[^"\\\x00-\x1f]*+"' if isinstance(value, str) else None
    if key == "hash_ids":
        return rb"\[%s\]" % int_list if isinstance(value, list) else None
    return rb"(?:%s|%s)" % (_SCALAR, _FLAT_LIST)


def _extractor(key: str) -> re.Pattern[bytes]:
    """Finds one key's raw value. Sound only on text that matched the line grammar: there a
    quoted key followed by a colon is a key (string values end at an unescaped quote, after
    which comes a comma or a brace), and the callers check one match per line."""
    name = re.escape(json.dumps(key, ensure_ascii=False).encode("utf-8"))
    value = {"id": rb'"([^"]*)"', "hash_ids": rb"\[([^\]]*)\]"}.get(key, rb"([^,}\s]+)")
    return re.compile(rb"%s[ \t\r]*:[ \t\r]*%s" % (name, value))


@dataclass(frozen=True)
class LineShape:
    """The grammar of every line (exact separators when the first line's are the usual ones)
    and the patterns that extract the values the reader needs."""

    grammar: re.Pattern[bytes]  # a whole chunk: such lines and empty lines
    extract: dict[str, re.Pattern[bytes]]


def line_shape(first_line: str, numeric: set[str],
               captured: tuple[str, ...] = ("id", "hash_ids")) -> LineShape | None:
    """The shape of lines like `first_line`: its keys in its order, values by JSON's grammar.

    numeric: keys whose values the reader parses as numbers; `captured`: others it extracts
    ("id": a string without escapes, "hash_ids": a list of integers). None when the first
    line is not a flat object with distinct keys."""
    try:
        pairs = json.loads(first_line, object_pairs_hook=list)
    except (ValueError, RecursionError):
        return None
    if not isinstance(pairs, list) or not pairs:
        return None
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        return None
    raw = first_line.strip("\r\n").encode("utf-8")
    # the usual separators exactly (much faster to match), else any JSON whitespace
    for item_sep, key_sep, edge in ((b", ", b": ", b""), (b",", b":", b""),
                                    (rb"%s,%s" % (_WS, _WS), rb"%s:%s" % (_WS, _WS), _WS)):
        int_list = (_INT_LIST_INNER if edge else
                    rb"(?:%s(?:%s%s)*+)?+" % (_INT, re.escape(item_sep), _INT))
        members = []
        for key, value in pairs:
            value_pattern = _value_pattern(key, value, numeric, captured, int_list)
            if value_pattern is None:
                return None
            members.append((re.escape(json.dumps(key, ensure_ascii=False).encode("utf-8")),
                            value_pattern))
        body = item_sep.join(rb"%s%s%s" % (k, key_sep, v) for k, v in members)
        line = rb"%s\{%s%s%s\}%s" % (edge, edge, body, edge, edge)
        if re.fullmatch(line, raw):
            break
    else:
        return None
    grammar = re.compile(rb"(?:(?:%s)?+\r?+\n)*+(?:%s)?+\r?+" % (line, line))
    wanted = [k for k in keys if k in numeric or k in captured]
    return LineShape(grammar, {k: _extractor(k) for k in wanted})


def read_chunks(handle: IO[bytes], shape: LineShape,
                chunk_bytes: int) -> Iterator[tuple[bytes, dict[str, list[bytes]]] | None]:
    """Yield (chunk bytes, {key: raw values, one per non-blank line}) per chunk of whole lines;
    None at the first chunk that is not entirely lines of this shape and empty lines."""
    while chunk := handle.read(chunk_bytes):
        chunk += handle.readline()
        if shape.grammar.fullmatch(chunk) is None:
            yield None
            return
        yield chunk, {key: pattern.findall(chunk) for key, pattern in shape.extract.items()}


def numbers(values: list[bytes]) -> np.ndarray:
    """JSON number texts (already checked by the grammar) as float64, as json.loads reads them
    (an integer too large for float64 becomes inf, which the callers reject as not finite)."""
    # float() per value beats numpy's bytes -> float cast several times over; the grammar has
    # ruled out what float() accepts and JSON does not (nan, inf, 1_0, leading zeros)
    return np.fromiter(map(float, values), dtype=np.float64, count=len(values))


def first_nonblank(file: Path) -> str | None:
    """The first non-blank line of the file as text, or None."""
    with file.open("rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    return raw.decode("utf-8-sig")
                except UnicodeDecodeError:
                    return None
    return None
