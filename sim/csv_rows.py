"""CSV rows formatted by numpy: the bytes `%d`, `%.6f` and `%s` give, without a Python call per
cell (result tables run to millions of rows: a per-row %-format costs ~0.75 µs a step row).

A chunk of rows is a byte matrix, one row per CSV row and a fixed slot per field, in which
every field is written right- or left-aligned and the unused bytes are 0; the CSV text is the
matrix's non-zero bytes in order. Digits come from whole-column integer arithmetic:

- `%d`: digits of |v| with its sign; leading zeros are unused bytes.
- `%.6f` (any number of decimals): |x| * 10**decimals rounded half to even, which is what
  `%` gives (the correctly rounded decimal of the exact binary value) except where the product
  lies within a few ulps of a half: those few values are formatted by Python itself and parsed
  back, so every value prints exactly as `%` prints it. A NaN is an empty field (pandas'
  na_rep); infinities and values too large for exact integer arithmetic are not handled here
  (`fixed_fits` says so and callers fall back to `%`).
- `%s` of strings: their UTF-8 bytes from a table, one entry per distinct value (categories,
  a run's shape) or per row; a string holding a NUL byte cannot be told from padding and is
  refused (None).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MAX_EXACT = 2.0**53  # integers up to here are exact in a float64
_POW10 = [10**k for k in range(20)]


def _num_digits(m: int) -> int:
    return len(str(m)) if m > 0 else 1


def _fill_digits(out: np.ndarray, w: np.ndarray, leading: bool) -> None:
    """out [n, D] uint8: the D low decimal digits of w (non-negative ints), as ASCII; leading
    zeros (all but the units digit of a value with fewer digits) left 0 unless `leading`."""
    d = out.shape[1]
    w = w.astype(np.uint64 if w.max(initial=0) >= 2**32 else np.uint32)
    for j in range(d - 1, -1, -1):
        q = w // 10
        digit = (w - q * 10).astype(np.uint8)
        digit += 48
        if not leading and j < d - 1:
            digit[w == 0] = 0
        out[:, j] = digit
        w = q


class Rows:
    """A chunk of n CSV rows, built field by field: `integer`, `fixed`, `text`, `const`; then
    `tobytes`."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._slots: list[tuple[int, str, tuple]] = []  # (width, kind, arguments)

    def const(self, text: bytes) -> None:
        """The same bytes in every row (separators, newline)."""
        assert b"\0" not in text
        if text:
            self._slots.append((len(text), "const", (text,)))

    def integer(self, v: np.ndarray) -> None:
        """`%d` of each value (ints of any sign)."""
        v = np.asarray(v, dtype=np.int64)
        lo, hi = (int(v.min()), int(v.max())) if len(v) else (0, 0)
        neg = lo < 0
        mag = np.abs(v) if neg else v
        width = _num_digits(max(hi, -lo if neg else 0))
        if neg:
            self._slots.append((1, "sign", (v < 0,)))
        self._slots.append((width, "digits", (mag, False)))

    def fixed(self, x: np.ndarray, decimals: int = 6) -> None:
        """`%.{decimals}f` of each value, NaN as an empty field; every other value must pass
        `fixed_fits`."""
        x = np.asarray(x, dtype=np.float64)
        nan = np.isnan(x)
        has_nan = bool(nan.any())
        s = np.abs(x) * float(_POW10[decimals])
        if has_nan:
            s[nan] = 0.0
        assert (s < _MAX_EXACT).all(), "fixed() of a value fixed_fits refuses"
        q = np.rint(s)
        # a product within a few ulps of a half may round the other way from the exact value
        near = np.abs(s - np.floor(s) - 0.5) <= 4 * np.spacing(s)
        q = q.astype(np.int64)
        if near.any():
            idx = np.flatnonzero(near & ~nan)
            fmt = f"%.{decimals}f"
            q[idx] = [abs(int((fmt % v).replace(".", ""))) for v in x[idx].tolist()]
        whole, frac = np.divmod(q, _POW10[decimals])
        neg = np.signbit(x) & ~nan
        start = len(self._slots)
        if neg.any():
            self._slots.append((1, "sign", (neg,)))
        self._slots.append((_num_digits(int(whole.max(initial=0))), "digits", (whole, False)))
        if decimals:
            self.const(b".")
            self._slots.append((decimals, "digits", (frac, True)))
        if has_nan:  # an empty field: blank every slot this value wrote
            self._slots.append((0, "blank", (start, nan)))

    def text(self, table: np.ndarray, index: np.ndarray | None = None) -> None:
        """Row i gets table[index[i]] (table: a numpy bytes array, dtype 'S'); index None: one
        entry per row."""
        width = table.dtype.itemsize
        if width:
            self._slots.append((width, "text", (table, index)))

    def tobytes(self) -> bytes:
        n = self.n
        width = sum(w for w, _, _ in self._slots)
        out = np.empty((n, width), dtype=np.uint8)
        offsets = []
        at = 0
        for w, kind, args in self._slots:
            offsets.append(at)
            view = out[:, at:at + w]
            if kind == "const":
                view[:] = np.frombuffer(args[0], dtype=np.uint8)
            elif kind == "sign":
                view[:, 0] = np.where(args[0], 45, 0)  # "-"
            elif kind == "digits":
                _fill_digits(view, args[0], args[1])
            elif kind == "text":
                table, index = args
                raw = table.view(np.uint8).reshape(len(table), w)
                view[:] = raw if index is None else raw[index]
            else:  # blank: zero the slots from `start` on in the masked rows
                start, mask = args
                out[mask, offsets[start]:at] = 0
            at += w
        return out[out != 0].tobytes()


def fixed_fits(x: np.ndarray, decimals: int = 6) -> bool:
    """Every value of x is NaN or formats through `Rows.fixed` (finite, and |x| * 10**decimals
    below 2**53, where float integers are exact)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return not bool((np.abs(x) * float(_POW10[decimals]) >= _MAX_EXACT).any())


def text_table(values: Sequence[str]) -> np.ndarray | None:
    """values as a numpy bytes array (UTF-8), None if one holds a NUL byte."""
    encoded = [v.encode() for v in values]
    if any(b"\0" in e for e in encoded):
        return None
    return np.asarray(encoded, dtype=np.bytes_) if encoded else np.zeros(0, dtype="S1")
