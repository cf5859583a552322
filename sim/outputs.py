"""Where batchsim may write: the checks every output (folder or file) passes before any work.

An output never goes where replacing it could destroy what the user did not ask to replace:
the current folder or any folder above it, the home folder or above, this repository or above,
a git repository, the filesystem root. An existing output is replaced only with --force, and
then only if it is of the same kind (a folder that is empty or holds the files batchsim writes
there; a file, not a folder). `check_output` runs before the work, so a bad --out fails in
milliseconds, not after a simulation; `check_replaceable` runs again at the swap
(sim.atomic), since the disk may have changed meanwhile.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from batchsim.sim.errors import UsageError

_REPO = Path(__file__).resolve().parent.parent


class OutputError(UsageError):
    """An output location that must not or cannot be written; the message says why."""


def _home() -> Path | None:
    home = os.path.expanduser("~")
    return Path(home).resolve() if home != "~" else None


def forbidden_reason(out: Path) -> str | None:
    """Why writing (and so possibly replacing) `out` could destroy the user's files, or None."""
    try:
        path = Path(out).resolve()
        cwd = Path.cwd().resolve()
    except (OSError, RuntimeError) as e:
        return f"cannot be resolved ({e})"
    if path == cwd:
        return "is the current folder"
    if path in cwd.parents:
        return "contains the current folder"
    home = _home()
    if home is not None and (path == home or path in home.parents):
        return "is or contains the home folder"
    if path == _REPO or path in _REPO.parents:
        return "is or contains the batchsim repository"
    if path.is_dir() and (path / ".git").exists():
        return "is a git repository"
    return None


def check_replaceable(out: Path, kind: str = "folder", expect: tuple[str, ...] = ()) -> None:
    """Raise OutputError unless `out` is absent or an output of this kind that may be replaced.

    kind: "folder" (then `expect`: files one of which an existing folder must hold, unless it
    is empty) or "file"."""
    reason = forbidden_reason(out)
    if reason is not None:
        raise OutputError(f"{out}: refusing to write there: it {reason}; choose another --out")
    if not (out.exists() or out.is_symlink()):
        return
    if kind == "file":
        if out.is_dir():
            raise OutputError(f"{out} is a folder: give a file name")
        return
    if not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder: choose another --out")
    try:
        names = {p.name for p in out.iterdir()}
    except OSError as e:
        raise OutputError(f"{out}: cannot read it ({e.strerror}); choose another --out") from None
    if names and expect and not names & set(expect):
        raise OutputError(f"{out} holds files that are not a batchsim {_what(expect)} (no "
                          f"{' or '.join(expect)}): refusing to replace it; remove it "
                          "yourself or choose another --out")


def _what(expect: tuple[str, ...]) -> str:
    return {"metrics.json": "run folder", "sweep.json": "sweep folder",
            "validation.json": "validation folder"}.get(expect[0], "output")


def check_output(out: Path, force: bool, kind: str = "folder", expect: tuple[str, ...] = (),
                 flag: str = "--out") -> None:
    """Before any work: `out` may be written (see module doc); a folder's parent is created."""
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not force and forbidden_reason(out) is None:
        raise OutputError(f"{out} already exists: choose another {flag} or pass --force")
    check_replaceable(out, kind, expect)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        if kind == "file":
            raise OutputError(f"cannot write {out}: {parent} does not exist: create it or "
                              f"choose another {flag}")
        try:
            parent.mkdir(parents=True)
        except OSError as e:
            raise OutputError(f"cannot create {parent}: {e.strerror}") from None
    if not parent.is_dir():
        raise OutputError(f"{parent} is not a folder: choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {parent}: permission denied")


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float made strict JSON: +inf -> "inf", -inf -> "-inf",
    NaN -> null (json.dumps would write the non-standard Infinity and NaN). numpy scalars and
    tuples become plain numbers and lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()  # a numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def read_json(path: Path) -> Any:
    """A JSON file batchsim wrote (run, sweep, validation), or OutputError naming the file."""
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as e:
        raise OutputError(f"{path}: cannot read it ({e.strerror})") from None
    except (ValueError, RecursionError) as e:
        raise OutputError(f"{path}: corrupted JSON ({e})") from None


def read_table(path: Path) -> Any:
    """A CSV file batchsim wrote, as a DataFrame, or OutputError naming the file."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except OSError as e:
        raise OutputError(f"{path}: cannot read it ({e.strerror})") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise OutputError(f"{path}: corrupted CSV ({str(e).splitlines()[0] if str(e) else e})"
                          ) from None
