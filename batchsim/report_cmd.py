"""`batchsim report PATH...`: rebuild or combine reports from what PATH is.

- one run folder (has metrics.json)       -> its run report (default RUN_DIR/report.html)
- several run folders                     -> a comparison report (--out required)
- a profile JSON                          -> the profile report (default PROFILE.html; for a
                                             shipped profile ./NAME.html, not in its folder)
- a validation folder (validation.json)   -> the validation report (reports.validation)
- a sweep folder (sweep.csv)              -> the sweep report (default SWEEP_DIR/report.html)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from batchsim.sim.errors import UsageError
from batchsim.sim.outputs import check_output
from batchsim.sim.shipped import resolve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="run folder(s), a profile JSON, a validation folder or a sweep folder")
    p.add_argument("--out", type=Path, help="HTML file to write (default: next to the input, "
                   "which is rebuilt in place)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")


def kind_of(path: Path) -> str:
    """'run', 'profile', 'validation' or 'sweep'; ValueError saying what was expected."""
    if path.is_file() and path.suffix == ".json":
        return "profile"
    if path.is_dir():
        if (path / "validation.json").is_file():
            return "validation"
        if (path / "sweep.csv").is_file():
            return "sweep"
        if (path / "metrics.json").is_file():
            return "run"
    raise ValueError(f"{path}: not a run folder (metrics.json), a sweep folder (sweep.csv), a "
                     "validation folder (validation.json) or a profile JSON")


def run(args: argparse.Namespace) -> int:
    # a bare profile name that is not a file here names a shipped profile (sim.shipped)
    args.paths = [resolve(p, "profiles") if p.suffix == ".json" else p for p in args.paths]
    kinds = [kind_of(p) for p in args.paths]
    if args.out is not None:
        target = args.out.resolve()
        for p in args.paths:
            inside = p.is_dir() and target.parent == p.resolve() and target.name != "report.html"
            if target == p.resolve() or inside:
                raise UsageError(f"--out {args.out} is one of the inputs or their files: "
                                 "choose another file")
        check_output(args.out, args.force, "file")
    try:
        written = _write(args, kinds)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        # the inputs are files batchsim wrote; one edited or damaged by hand lacks a field or
        # holds a value of the wrong type, which surfaces here as one of these
        what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        paths = ", ".join(str(p) for p in args.paths)
        raise UsageError(f"{paths}: damaged {kinds[0]} files, cannot report them ({what})"
                         ) from None
    print(f"report: {written}")
    return 0


def _write(args: argparse.Namespace, kinds: list[str]) -> Path:
    if len(args.paths) > 1:
        if set(kinds) != {"run"}:
            raise ValueError("several PATHs are compared as runs: give only run folders")
        if args.out is None:
            raise ValueError("comparing runs needs --out FILE.html")
        from batchsim.reports.compare import write_comparison

        written = write_comparison(args.paths, args.out)
    else:
        path, kind = args.paths[0], kinds[0]
        if kind == "profile":
            from batchsim.reports.profile_report import write_profile_report

            written = write_profile_report(path, args.out)
        elif kind == "sweep":
            from batchsim.reports.sweep_report import write_sweep_report

            written = write_sweep_report(path, args.out)
        elif kind == "validation":
            try:
                from batchsim.reports.validation import write_validation_report
            except ImportError:
                raise ValueError(f"{path}: validation reports are not available in this "
                                 "build (reports.validation is missing)") from None
            written = write_validation_report(path, args.out or path / "report.html")
        else:
            from batchsim.reports.run_report import write_run_report

            written = write_run_report(path, args.out)
    return Path(written)
