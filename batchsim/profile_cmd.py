"""`batchsim profile`: measure step costs on the real engine, fit cost models, write a profile."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from batchsim.extras import require_profile_extra
from batchsim.progress import LazyProgress, quiet_library_warnings
from batchsim.sim.errors import UsageError
from batchsim.sim.outputs import check_output

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
    p.add_argument("--force", action="store_true",
                   help="replace an existing finished profile at --out")
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
    p.add_argument("--import", dest="import_from", nargs=2, metavar=("FORMAT", "PERF_DIR"),
                   help="build the profile from published measurements instead: FORMAT "
                        "llmservingsim, PERF_DIR .../profiler/perf/<hw>/<org>/<model>/<variant>, "
                        "--model the model's config.json (docs/IMPORT.md); no torch needed")
    p.add_argument("--tp", type=int, default=1,
                   help="--import, --analytic: tensor-parallel degree (--import reads "
                        "PERF_DIR/tp<N>; default 1)")
    p.add_argument("--tp-link-gbps", type=float, default=None,
                   help="--import, tp > 1: GPU-to-GPU link bandwidth of the ring all-reduce "
                        "(default: the perf tree's measured hardware.yaml, else 25 GB/s, an "
                        "assumption recorded in the profile)")
    p.add_argument("--tp-link-latency-us", type=float, default=None,
                   help="--import, tp > 1: latency per ring hop (default: hardware.yaml's "
                        "measured one, else 5 us, assumed)")
    p.add_argument("--gpu-memory-gb", type=float, default=None,
                   help="--import: device memory in GiB (default: meta.yaml, the perf tree's "
                        "hardware.yaml, or the GPU's published capacity)")
    p.add_argument("--decode-spread", type=float, default=None,
                   help="--import: decode contexts of a step assumed spread over mean*(1+-F) "
                        "for the skew correction (default 1; 0 = all equal)")
    g = p.add_argument_group("analytic profile (no hardware: docs/ANALYTIC.md)")
    g.add_argument("--analytic", action="store_true",
                   help="compute the profile from FLOPs, bytes and a GPU's published figures with "
                        "calibrated kernel efficiencies; without --gpu, list the known GPUs")
    g.add_argument("--gpu", help="with --analytic: a known GPU (h100-sxm, a100-80gb, l40s, ...) "
                                 "or a JSON file of your own figures")
    g.add_argument("--engine", choices=("vllm", "eager"), default=None,
                   help="with --analytic: vllm (CUDA graphs, the default) or eager (batchsim's "
                        "own transformers engine)")
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
    if args.analytic:
        return _analytic(args)
    for flag in ("gpu", "engine"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag} goes with --analytic")
    if args.refit is not None:
        return _refit(args)
    if args.merge is not None:
        return _merge(args)
    if args.import_from is not None:
        return _import(args)
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
    if not args.resume:
        check_output(out, args.force, "file")  # before loading the model for nothing
    config = ProfileConfig(
        model=args.model, out=out, device=device, dtype=dtype, grid=args.grid, seed=args.seed,
        repeats=args.repeats, resume=args.resume,
        memory_cap_bytes=int(args.memory_cap_gb * 2**30) if args.memory_cap_gb else None,
        threads=args.threads, clock=args.clock,
    )
    bar = LazyProgress("points", final_line=not args.quiet)
    try:
        # transformers' FutureWarnings would break the bar's line: the user cannot act on them
        with quiet_library_warnings():
            result = run_profile(config, progress=bar)
    except ProfileInterrupted as e:
        bar.close()
        again = ["batchsim", "profile", "--model", args.model, "--device", device, "--dtype",
                 dtype, "--out", str(e.path), "--resume"]
        again += ["--threads", str(args.threads)] if args.threads else []
        again += ["--clock", args.clock] if args.clock else []
        again += ["--memory-cap-gb", str(args.memory_cap_gb)] if args.memory_cap_gb else []
        print(f"batchsim: {e}\nresume with: {shlex.join(again)}", file=sys.stderr)
        return 128 + int(getattr(e.__context__, "signum", 2))  # 130 Ctrl-C, 143 SIGTERM
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
    if args.out.resolve() not in {p.resolve() for p in args.merge}:
        check_output(args.out, args.force, "file")
    doc = merge_profiles(list(args.merge), args.out)
    if not args.quiet:
        print(experiment_record(doc), end="")
    print(f"merged {len(args.merge)} passes into {args.out}")
    print(f"report: {_write_report(args.out)}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from batchsim.profiler.imported import llmservingsim as lss
    from batchsim.profiler.profiling.profile_file import (
        check_fresh_target,
        check_writable,
        save_atomic,
    )

    fmt, perf_dir = args.import_from
    if fmt != "llmservingsim":
        raise ValueError(f"--import {fmt!r}: unknown format; known: llmservingsim")
    if args.model is None:
        raise ValueError("--import llmservingsim PERF_DIR needs --model CONFIG.json (the "
                         "model's Hugging Face config)")
    folder = Path(perf_dir)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (expected .../profiler/perf/<hw>/<org>/"
                         "<model>/<variant>)")
    config = lss.ImportConfig(
        perf_dir=folder, config=Path(args.model), tp=args.tp,
        link_gbps=args.tp_link_gbps, link_latency_us=args.tp_link_latency_us,
        gpu_memory_gb=args.gpu_memory_gb,
        decode_spread=1.0 if args.decode_spread is None else args.decode_spread,
        seed=args.seed or 0)
    name = folder.resolve()
    out = args.out or Path(f"profile-{name.parent.name}-{name.parents[2].name}-tp{args.tp}"
                           "-imported.json")
    check_writable(out)
    check_fresh_target(out)
    doc, errors = lss.import_profile(config)
    save_atomic(out, doc)
    if not args.quiet:
        print(f"imported {doc['model']['name']} on {doc['fingerprint']['device']} at tp "
              f"{args.tp} ({doc['fingerprint']['engine']}, {len(doc['points'])} composed points)")
        print("fit against composed table times on held-out shapes:")
        for phase, e in errors.items():
            form = "grid" if e["grid"] else doc["cost_models"][f"packed.{phase}"]["cv"][
                "candidate"]
            print(f"  packed.{phase:<8} MAPE {e['mape'] * 100:6.3f}%  worst "
                  f"{e['max_ape'] * 100:6.2f}%  ({form}; max-of-linear forms "
                  f"{e['parametric_mape'] * 100:.2f}%)")
        mem = doc["memory"]
        print(f"memory per GPU: {mem['total_bytes'] / 2**30:.1f} GiB device, "
              f"{mem['weight_bytes'] / 2**30:.2f} GiB weights, {mem['kv_bytes_per_token']:,} "
              "B KV per token")
    print(f"wrote {out}")
    print(f"report: {_write_report(out)}")
    return 0


def _analytic(args: argparse.Namespace) -> int:
    """`profile --analytic`: no torch, no hardware; the file says "source": "analytic"."""
    from batchsim.profiler.analytic.arch import resolve_arch
    from batchsim.profiler.analytic.builder import analytic_profile
    from batchsim.profiler.analytic.gpus import GPUS, resolve_gpu
    from batchsim.sim.atomic import atomic_file

    if args.gpu is None:
        print("GPUs known to --analytic --gpu (or give a JSON file of your own figures):")
        for g in GPUS.values():
            print(f"  {g.name:<13} {g.family:<9} {g.peak_flops / 1e12:7.1f} TFLOP/s bf16  "
                  f"{g.mem_bandwidth / 1e9:6.0f} GB/s  {g.mem_bytes / 2**30:4.0f} GiB  {g.link}")
        if args.model is None:
            return 0
        raise ValueError("--analytic needs --gpu (one of the GPUs listed above)")
    if args.model is None:
        raise ValueError("--analytic needs --model (a preset, a config.json or a directory)")
    for flag in ("device", "grid", "resume", "repeats", "memory_cap_gb", "threads", "clock",
                 "refit", "merge", "import_from", "tp_link_gbps", "tp_link_latency_us",
                 "gpu_memory_gb", "decode_spread"):
        if getattr(args, flag) not in (None, False):
            raise ValueError(f"--{flag.replace('_', '-')} does not apply to --analytic")
    arch, raw = resolve_arch(args.model)
    gpu = resolve_gpu(args.gpu)
    tp = args.tp
    engine = args.engine or "vllm"
    dtype = args.dtype or "bfloat16"
    tag = f"-tp{tp}" if tp > 1 else ""
    out = args.out or Path(f"profile-{arch.name}-{gpu.name}{tag}-analytic.json")
    if out.exists() and not getattr(args, "force", False):
        raise ValueError(f"{out} already exists: choose another --out or remove it")
    doc = analytic_profile(arch, raw, gpu, tp, dtype, engine)
    import json

    with atomic_file(out) as f:
        f.write(json.dumps(doc, indent=1) + "\n")
    if not args.quiet:
        cv = {k: m["cv"]["mape"] for k, m in doc["cost_models"].items()}
        print(f"analytic profile: {arch.name} on {gpu.name}, tp {tp}, {dtype}, {engine} engine "
              f"(not a measurement; scores: python bench/analytic_accuracy.py)")
        print("fit to the analytic step times (CV MAPE): "
              + ", ".join(f"{k} {100 * v:.1f}%" for k, v in cv.items() if v is not None))
    print(f"wrote {out}")
    return 0
