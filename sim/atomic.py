"""Atomic outputs: a file or a folder appears whole or not at all.

Everything batchsim writes (run folders, sweeps, validations, reports, converted traces,
profiles) is assembled under a temporary name in the destination's own folder, so the final
rename stays on one filesystem and is atomic; an error or Ctrl-C removes the temporary and
leaves whatever was there before untouched. Temporaries get the permissions an ordinary file or
folder would get under the user's umask (mkstemp/mkdtemp alone make them private).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `out` (an existing `out` is removed)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(out: Path, sync: bool = False) -> Iterator[IO[str]]:
    """Yield a text handle on a temporary sibling; on success it replaces `out`.

    sync: fsync before the rename, for files rewritten often during long work (profiles), so a
    crash cannot leave a renamed but empty file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
