"""Atomic outputs: a file or a folder appears whole or not at all, and nothing else is lost.

Everything batchsim writes (run folders, sweeps, validations, reports, converted traces,
profiles) is assembled in a *work folder*, a hidden sibling of the destination
(`<parent>/.<name>.<random>/`), so every rename stays on one filesystem:

- the new output is built at `<work>/<name>` (the same name as the destination);
- only when it is complete, an existing destination folder is renamed aside (a sibling, so a
  read-only folder moves too), the new one renamed into place, and only then the old one
  removed; a file destination is replaced by one rename;
- an error, Ctrl-C or SIGTERM before the swap removes the work folder and leaves the old output
  untouched; from the swap on, signals are held back until the cleanup is done (then delivered),
  so a handled signal never finds the destination without a complete output.

Each work folder holds a marker file (`MARKER`, JSON: process id, host, destination, the
aside name) and nothing outside it is ever removed except the aside copy of the old output
that the swap made. A run killed with SIGKILL leaves its work folder; the next output written
into the same folder finds it by its marker, sees that its process is gone, restores the old
output if the kill fell between the two renames, and removes it (`clean_stale`).
Temporaries get the permissions an ordinary file or folder would get under the user's umask.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from batchsim.sim.outputs import check_replaceable

log = logging.getLogger(__name__)

MARKER = ".batchsim-work"  # inside every work folder; never inside an output
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (delivered on exit) so a rename pair or a cleanup completes."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _write_marker(work: Path, target: str, aside: str | None = None) -> None:
    record = {"batchsim_work": 1, "pid": os.getpid(), "host": socket.gethostname(),
              "target": target, "aside": aside}
    tmp = work / (MARKER + ".new")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, work / MARKER)


def _new_work(out: Path) -> Path:
    parent = out.parent if str(out.parent) else Path(".")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    _write_marker(work, out.name)
    return work


def _remove_tree(path: Path) -> bool:
    """rmtree that also removes read-only subfolders (ours to remove); False if it could not."""
    def retry(func: Any, name: str, _exc: Any) -> None:
        os.chmod(os.path.dirname(name), stat.S_IRWXU)
        if os.path.isdir(name) and not os.path.islink(name):
            os.chmod(name, stat.S_IRWXU)
            shutil.rmtree(name, onerror=retry)
        else:
            func(name)

    try:
        if path.is_symlink():  # an --out that was a link: remove the link, not its target
            path.unlink()
        else:
            shutil.rmtree(path, onerror=retry)
        return True
    except OSError as e:
        log.warning("could not remove %s: %s", path, e.strerror or e)
        return False


def _discard(work: Path) -> None:
    """Remove a work folder: its content first, the marker last (a kill midway keeps it found)."""
    with _signals_held():
        for entry in work.iterdir():
            if entry.name != MARKER:
                if entry.is_dir() and not entry.is_symlink():
                    _remove_tree(entry)
                else:
                    entry.unlink(missing_ok=True)
        _remove_tree(work)


@contextmanager
def atomic_dir(out: Path, kind: str = "folder", expect: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty folder named like `out`; on success it replaces `out` (see module doc).

    kind, expect: what an existing `out` must be to be replaced (sim.outputs.check_replaceable):
    a folder that is empty or holds one of the `expect` files."""
    out = Path(out)
    check_replaceable(out, kind, expect)
    clean_stale(out)
    work = _new_work(out)
    new = work / out.name
    try:
        new.mkdir()
        yield new
    except BaseException:
        _discard(work)
        raise
    # the new output is complete: swap, then clean up, with signals held back throughout (a
    # signal meanwhile is delivered after, when the destination holds the new output)
    with _signals_held():
        aside = None
        try:
            if out.exists() or out.is_symlink():
                aside = Path(tempfile.mktemp(prefix=f".{out.name}.", suffix=".old",
                                             dir=work.parent))
                _write_marker(work, out.name, aside.name)  # recorded before the old one moves
                os.rename(out, aside)
            os.rename(new, out)
        except BaseException:
            if aside is not None and aside.exists() and not out.exists():
                os.rename(aside, out)  # the old output back where it was
            _discard(work)
            raise
        if aside is not None:
            _remove_tree(aside)
        _discard(work)


@contextmanager
def atomic_file(out: Path, sync: bool = False) -> Iterator[IO[str]]:
    """Yield a text handle on a file in a work folder; on success it replaces `out`.

    sync: fsync before the rename, for files rewritten often during long work (profiles), so a
    crash cannot leave a renamed but empty file. Callers check `out` (sim.outputs) first."""
    out = Path(out)
    if out.is_dir():
        raise OSError(f"cannot write {out}: it is a folder")
    clean_stale(out)
    work = _new_work(out)
    tmp = work / out.name
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        _discard(work)
        raise
    with _signals_held():  # a signal meanwhile is delivered once the new file is in place
        try:
            os.replace(tmp, out)
        finally:
            _discard(work)


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("batchsim_work") == 1 else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove the work folders that killed batchsim runs left next to `out`; return them.

    A work folder is recognised by its marker, not its name. One whose process still runs
    (or ran on another host) is left alone, with a warning. If the kill fell between the two
    renames of a swap (the destination is missing, its old copy is aside), the old copy is
    put back first, so the destination holds the complete old output again."""
    parent = out.parent if str(out.parent) else Path(".")
    removed: list[Path] = []
    try:
        entries = [e for e in parent.iterdir() if e.name.startswith(".") and e.is_dir()]
    except OSError:
        return removed
    for entry in entries:
        record = _read_marker(entry)
        if record is None:
            continue
        if record.get("host") != socket.gethostname() or _alive(record.get("pid")):
            if record.get("target") == out.name and record.get("pid") != os.getpid():
                log.warning("%s: another batchsim process (pid %s on %s) is writing %s",
                            entry, record.get("pid"), record.get("host"), out)
            continue
        target = parent / str(record.get("target"))
        aside_name = record.get("aside")
        if isinstance(aside_name, str) and (parent / aside_name).exists():
            aside = parent / aside_name
            if not (target.exists() or target.is_symlink()):
                os.rename(aside, target)
                log.warning("%s: restored the previous output, which an interrupted run had "
                            "moved aside", target)
            else:
                _remove_tree(aside)
        _discard(entry)
        log.warning("removed %s, left by a batchsim run that was killed", entry)
        removed.append(entry)
    return removed
