"""`batchsim profile`: measure step costs on the real engine, fit cost models, write a profile."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from batchsim.extras import require_profile_extra
from batchsim.progress import LazyProgress, quiet_library_warnings
from batchsim.sim.errors import UsageError

logger = logging.getLogger(__name__)

GRIDS = ("quick", "standard", "full")
DTYPES = ("bfloat16", "float16", "float32")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model",
                   help="preset (qwen2.5-0.5b, qwen2-1.5b, llama-2-7b, mistral-7b, distilgpt2, "
                        "tiny-qwen2, ...), a config.json path or a local checkpoint directory")
    p.add_argument("--device", help="cuda or cpu (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES,
                   help="default: the model's published dtype on cuda, float32 on cpu")
    p.add_argument("--grid", choices=GRIDS,
                   help="grid size (default quick; on --resume, the interrupted run's)")
    p.add_argument("--out", type=Path,
                   help="profile file (default: ./profile-<model>-<device>-<dtype>.json; with "
                        "--refit: the refitted copy, default the input itself)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--seed", type=int, help="seed of the grid order and random weights (default 0)")
    p.add_argument("--repeats", type=int, help="timed steps per grid point (default: per grid)")
    p.add_argument("--memory-cap-gb", type=float,
                   help="cpu: KV memory the run may use; bounds the max-batch search "
                        "(default min(2, 25%% of free RAM))")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads during the measurement (default: all cores)")
    p.add_argument("--clock", choices=("wall", "thread"),
                   help="step time: host wall time (default), or with --device cpu --threads 1 "
                        "the thread's CPU time, which other processes on the machine do not "
                        "inflate")
    p.add_argument("--quiet", action="store_true", help="print only the profile path")
    p.add_argument("--refit", type=Path, metavar="PROFILE",
                   help="refit the cost models of a finished profile from its raw points (no "
                        "measurement, no torch needed) into --out, or in place; a shipped "
                        "profile is rewritten only when --out names it")
    p.add_argument("--merge", type=Path, nargs="+", metavar="PROFILE",
                   help="merge finished passes over the same grid into --out (each point's "
                        "time: the median of all passes' samples), refit; no torch needed")


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: use cuda or cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here (torch "
                         f"{torch.__version__}); use --device cpu")
    return device


def _resolve_dtype(dtype: str | None, device: str, model: str) -> str:
    if device == "cpu":
        if dtype == "float16":
            raise ValueError("--dtype float16 is not supported on cpu (slow and poorly covered by "
                             "CPU kernels): use float32 (fastest on most CPUs) or bfloat16")
        if dtype == "bfloat16":
            logger.warning("bfloat16 on cpu is slow without AMX; float32 is usually faster")
        return dtype or "float32"
    if dtype is not None:
        return dtype
    from batchsim.profiler.engine.models import parse_dtype, resolve_model

    return str(parse_dtype(None, resolve_model(model).config)).removeprefix("torch.")


def run(args: argparse.Namespace) -> int:
    if args.refit is not None:
        return _refit(args)
    if args.merge is not None:
        return _merge(args)
    if args.model is None:
        raise ValueError("profile needs --model (or --refit PROFILE)")
    require_profile_extra("profile")
    from batchsim.profiler.engine.models import resolve_model
    from batchsim.profiler.profiling.record import experiment_record
    from batchsim.profiler.profiling.runner import (
        ProfileConfig,
        ProfileInterrupted,
        default_out,
        run_profile,
    )

    resolve_model(args.model)  # unknown model: one line listing the presets, before anything else
    device = _resolve_device(args.device)
    dtype = _resolve_dtype(args.dtype, device, args.model)
    if args.memory_cap_gb is not None and args.memory_cap_gb <= 0:
        raise ValueError(f"--memory-cap-gb must be positive, got {args.memory_cap_gb}")
    out = args.out or default_out(args.model, device, dtype)
    config = ProfileConfig(
        model=args.model, out=out, device=device, dtype=dtype, grid=args.grid, seed=args.seed,
        repeats=args.repeats, resume=args.resume,
        memory_cap_bytes=int(args.memory_cap_gb * 2**30) if args.memory_cap_gb else None,
        threads=args.threads, clock=args.clock,
    )
    bar = LazyProgress("points", final_line=not args.quiet)
    try:
        # transformers' FutureWarnings and our logging would break the bar's line: silence the
        # former, route the latter through tqdm
        with quiet_library_warnings(), logging_redirect_tqdm():
            result = run_profile(config, progress=bar)
    except ProfileInterrupted as e:
        bar.close()
        again = ["batchsim", "profile", "--model", args.model, "--device", device, "--dtype",
                 dtype, "--out", str(e.path), "--resume"]
        again += ["--threads", str(args.threads)] if args.threads else []
        again += ["--clock", args.clock] if args.clock else []
        again += ["--memory-cap-gb", str(args.memory_cap_gb)] if args.memory_cap_gb else []
        print(f"batchsim: {e}\nresume with: {shlex.join(again)}", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if not args.quiet:
        print(experiment_record(result.document), end="")
    print(f"wrote {result.path}")
    print(f"report: {_write_report(Path(result.path))}")
    return 0


def _write_report(profile: Path) -> Path:
    """The profile report next to the profile, `<profile>.html` (no torch needed); for a
    shipped profile, in the current folder."""
    from batchsim.reports.profile_report import default_report_path, write_profile_report

    return write_profile_report(profile, default_report_path(profile))


def _refit(args: argparse.Namespace) -> int:
    from batchsim.profiler.profiling.profile_file import refit_profile
    from batchsim.profiler.profiling.record import experiment_record
    from batchsim.sim.shipped import is_shipped, resolve

    source = resolve(args.refit, "profiles")
    out: Path = args.out or source
    if args.out is None and is_shipped(source):
        raise UsageError(f"{source} is a shipped profile: write the refit elsewhere with --out "
                         "FILE (--out naming it rewrites it)")
    if args.out is not None and out.exists() and out.resolve() != source.resolve():
        raise UsageError(f"{out} already exists: choose another --out")
    doc = refit_profile(source, out)
    if not args.quiet:
        print(experiment_record(doc), end="")
    print(f"refitted {source}" + (f" into {out}" if out != source else ""))
    print(f"report: {_write_report(out)}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from batchsim.profiler.profiling.profile_file import merge_profiles
    from batchsim.profiler.profiling.record import experiment_record

    if args.out is None:
        raise ValueError("--merge needs --out FILE for the merged profile")
    if args.out.exists() and args.out.resolve() not in {p.resolve() for p in args.merge}:
        raise ValueError(f"{args.out} already exists: choose another --out")
    doc = merge_profiles(list(args.merge), args.out)
    if not args.quiet:
        print(experiment_record(doc), end="")
    print(f"merged {len(args.merge)} passes into {args.out}")
    print(f"report: {_write_report(args.out)}")
    return 0
