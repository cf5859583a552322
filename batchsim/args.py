"""Command-line options shared by `simulate`, `sweep`, `validate` and `trace`, defined once.

The workload options (a trace and how to read and replay it, or synthetic arrivals and lengths)
are added by `add_workload_options` and read back by `workload_from_args`, so every command
spells, checks and records them the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchsim.sim.errors import UsageError
from batchsim.sim.workload.traces import FORMATS
from batchsim.sim.workload.transform import TraceOptions

if TYPE_CHECKING:
    from batchsim.sim.engine_config import EngineConfig
    from batchsim.sim.run import RunSpec

ArgGroup = argparse.ArgumentParser | argparse._ArgumentGroup

# How a trace is read and cut (every command with --trace); dest names
TRACE_READ_FLAGS = ("trace_format", "strict", "start", "duration", "max_input_len", "sample")
# How a trace is sped up (simulate, sweep, trace convert; validate sets the rate from --loads)
TRACE_RESCALE_FLAGS = ("time_scale", "target_rate")
# Synthetic lengths and arrivals, vllm bench semantics (simulate adds request_rate)
SYNTHETIC_FLAGS = ("burstiness", "num_requests", "input_len", "output_len", "range_ratio",
                   "lengths_from", "prefix_len", "num_prefix_groups")


def flag(dest: str) -> str:
    """argparse dest -> the command-line flag: max_input_len -> --max-input-len."""
    return "--" + dest.replace("_", "-")


# vLLM's names for knobs batchsim calls otherwise (used when the policy has no knob of that name)
KNOB_ALIASES = {"scheduling_policy": "policy"}


def add_knob_option(p: argparse.ArgumentParser, example: str = "max_num_seqs=128",
                    what: str = "set a policy knob") -> None:
    """--set KNOB=VALUE (repeatable; vLLM's dashed spelling works too) and --scheduling-policy."""
    p.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                   help=f"{what} (repeatable), e.g. --set {example} (or "
                        f"{example.replace('_', '-')}, as vLLM spells it)")
    p.add_argument("--scheduling-policy", choices=("fcfs", "priority"),
                   help="vLLM's --scheduling-policy: the continuous and hybrid policies' "
                        "`policy` knob (default fcfs)")


def knob_name(text: str) -> str:
    """A knob as the user typed it -> its name: vLLM's max-num-seqs is max_num_seqs."""
    return text.strip().replace("-", "_")


def parse_knobs(items: list[str]) -> dict[str, str]:
    """`--set KNOB=VALUE` items -> {knob: value} (values are parsed by the policy's config)."""
    knobs: dict[str, str] = {}
    for item in items:
        knob, sep, value = item.partition("=")
        if not sep or not knob.strip():
            raise UsageError(f"--set takes KNOB=VALUE, got {item!r}")
        knobs[knob_name(knob)] = value.strip()
    return knobs


def resolve_knob_aliases(knobs: dict[str, Any], policies: list[str]) -> dict[str, Any]:
    """Rename vLLM's knob names (KNOB_ALIASES) to the policies' own where they have no knob of
    the alias's name but have the target."""
    from batchsim.policies.registry import get_policy

    fields = {f.name for p in policies for f in dataclasses.fields(get_policy(p).config_class)}
    out: dict[str, Any] = {}
    for knob, value in knobs.items():
        target = KNOB_ALIASES.get(knob)
        out[target if target and knob not in fields and target in fields else knob] = value
    return out


def knobs_from_args(args: argparse.Namespace, policies: list[str]) -> dict[str, str]:
    """--set items plus --scheduling-policy, in the policies' own knob names."""
    knobs = parse_knobs(args.knobs)
    if args.scheduling_policy is not None:
        knobs["scheduling_policy"] = args.scheduling_policy
    return resolve_knob_aliases(knobs, policies)


def add_cpu_path_options(p: argparse.ArgumentParser) -> None:
    """The hybrid policy's CPU path: its cost model and the KV copy into the GPU pool."""
    h = p.add_argument_group("hybrid policy: the CPU path (a CPU copy of the model prefills)")
    h.add_argument("--cpu-profile", help="CPU profile of the same model whose packed.prefill is "
                   "the CPU path's cost (default: the profile's own cpu.packed.prefill)")
    h.add_argument("--kv-copy-gbps", type=float, help="ASSUMED CPU->GPU KV copy bandwidth, GB/s "
                   "(default: the profile's measured kv_copy); recorded as an assumption")
    h.add_argument("--kv-copy-latency-us", type=float, default=0.0,
                   help="assumed fixed cost per KV hand-off, us (with --kv-copy-gbps)")


def add_jitter_option(p: argparse.ArgumentParser, default: bool) -> None:
    """Step-time jitter drawn from the profile's repeats (sim.jitter)."""
    state = "on" if default else "off"
    p.add_argument("--jitter", action=argparse.BooleanOptionalAction, default=default,
                   help="price each GPU step at the cost model's prediction times a factor drawn "
                        "from the profile's own repeat scatter (seeded by --seed; needs a "
                        f"measured profile); default {state}")


def add_engine_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine-config", metavar="META.json",
                   help="a vLLM engine's settings (engine_kwargs, kv_cache) as knobs: "
                        "max_num_seqs, max_num_batched_tokens, block_size, num_gpu_blocks, ...; "
                        "--set wins; one warning per setting batchsim does not model")


def engine_config(path: str | None, policies: list[str]) -> EngineConfig | None:
    """--engine-config read once (its warnings logged once) for these policies' knobs."""
    if path is None:
        return None
    from batchsim.policies.registry import get_policy
    from batchsim.sim.engine_config import read_engine_config

    names = {f.name for p in policies for f in dataclasses.fields(get_policy(p).config_class)}
    return read_engine_config(path, names)
# -- workloads ----------------------------------------------------------------------------------


def add_format_options(g: ArgGroup) -> None:
    """--trace-format and --strict: how any trace file is parsed."""
    g.add_argument("--trace-format", choices=list(FORMATS), help="skip format detection")
    g.add_argument("--strict", action="store_true",
                   help="fail on out-of-order timestamps instead of sorting them")


def add_trace_options(g: ArgGroup, rescale: bool = True) -> None:
    """How a trace is read, cut and replayed (rescale: also --time-scale and --target-rate)."""
    add_format_options(g)
    g.add_argument("--start", type=float, metavar="S",
                   help="keep arrivals from S seconds of trace time on (before any scaling)")
    g.add_argument("--duration", type=float, metavar="D",
                   help="keep D seconds of trace time from --start (before any scaling)")
    if rescale:
        g.add_argument("--time-scale", type=float, metavar="K",
                       help="multiply arrival times by K (0.5 = replay twice as fast; default 1)")
        g.add_argument("--target-rate", type=float, metavar="R",
                       help="rescale time so the mean arrival rate is R req/s (not with "
                            "--time-scale)")
    g.add_argument("--max-input-len", type=int, metavar="N", help="drop prompts longer than N")
    g.add_argument("--sample", type=float, metavar="FRACTION",
                   help="keep each request with this probability (seeded by --seed)")


def add_workload_options(p: argparse.ArgumentParser, *, defaults: Any, request_rate: bool,
                         rescale: bool, trace_help: str, per: str = "") -> None:
    """--trace with its reading options, and the synthetic workload's options.

    defaults: an object with num_requests, input_len, output_len (for the help text);
    request_rate: add the synthetic --request-rate (sweep and validate set rates themselves);
    rescale: add --time-scale and --target-rate; per: "per point", "per load level".
    """
    g = p.add_argument_group("trace workload (see docs/TRACES.md)")
    g.add_argument("--trace", help=trace_help)
    add_trace_options(g, rescale=rescale)
    s = p.add_argument_group("synthetic workload (vllm bench semantics)")
    if request_rate:
        s.add_argument("--request-rate", type=float, help="requests/s; inf = all at t=0 (default)")
    s.add_argument("--burstiness", type=float, help="gamma shape of gaps; 1 = Poisson (default)")
    # second spellings: `vllm bench serve`'s names for the same options
    s.add_argument("--num-requests", "--num-prompts", dest="num_requests", type=int,
                   help=f"number of requests{' ' + per if per else ''} (default "
                        f"{defaults.num_requests})")
    s.add_argument("--input-len", "--random-input-len", dest="input_len", type=int,
                   help=f"prompt tokens (default {defaults.input_len})")
    s.add_argument("--output-len", "--random-output-len", dest="output_len", type=int,
                   help=f"output tokens (default {defaults.output_len})")
    s.add_argument("--range-ratio", "--random-range-ratio", dest="range_ratio", type=float,
                   help="lengths uniform in len*(1±r) (default 0)")
    s.add_argument("--lengths-from", help="sample (input, output) lengths from this trace")
    s.add_argument("--prefix-len", type=int,
                   help="shared system prompt: tokens before each prompt's own --input-len "
                        "(for enable_prefix_caching; default 0)")
    s.add_argument("--num-prefix-groups", type=int,
                   help="distinct shared prompts, one drawn per request (default 1)")


@dataclass(frozen=True)
class WorkloadArgs:
    """The workload options as given: a trace with its options, or synthetic overrides."""

    trace: str | None
    trace_options: TraceOptions | None  # None: no trace
    time_scale: float  # 1 unless --time-scale
    synthetic: dict[str, Any] = field(default_factory=dict)  # the synthetic flags given


def _is_set(value: Any) -> bool:
    return value is not None and value is not False  # 0 is a value given (and an error later)


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if _is_set(getattr(args, n, None))]


def _time_scale(args: argparse.Namespace) -> float:
    value = getattr(args, "time_scale", None)
    return 1.0 if value is None else float(value)


def workload_from_args(args: argparse.Namespace, request_rate: bool = False) -> WorkloadArgs:
    """Read the workload options back; UsageError for trace options without --trace and
    synthetic ones with it. request_rate: --request-rate is the synthetic one (simulate)."""
    synthetic_names = ("request_rate", *SYNTHETIC_FLAGS) if request_rate else SYNTHETIC_FLAGS
    synthetic = {n: getattr(args, n) for n in _given(args, synthetic_names)}
    trace_given = _given(args, (*TRACE_READ_FLAGS, *TRACE_RESCALE_FLAGS))
    if args.trace is None:
        if trace_given:
            raise UsageError(f"{', '.join(map(flag, trace_given))} needs --trace")
        return WorkloadArgs(None, None, 1.0, synthetic)
    if synthetic:
        raise UsageError(f"{', '.join(map(flag, synthetic))} cannot be combined with --trace")
    return WorkloadArgs(args.trace, trace_options(args), _time_scale(args))


def trace_options(args: argparse.Namespace) -> TraceOptions:
    """The TraceOptions of the command line (--seed seeds --sample)."""
    return TraceOptions(
        time_scale=_time_scale(args), format=args.trace_format,
        strict=args.strict, start_s=args.start or 0.0, duration_s=args.duration,
        target_rate=getattr(args, "target_rate", None), max_input_len=args.max_input_len,
        sample=args.sample, seed=args.seed)


def trace_words(args: argparse.Namespace) -> list[str]:
    """The trace options given, as command-line words (for a printed rerun command)."""
    words: list[str] = []
    for name in (*TRACE_READ_FLAGS, *TRACE_RESCALE_FLAGS):
        value = getattr(args, name, None)
        if value is True:
            words.append(flag(name))
        elif _is_set(value):
            words += [flag(name), str(value)]
    return words


def with_cpu_path_defaults(spec: RunSpec, policies: list[str]) -> tuple[RunSpec, list[str]]:
    """Fill in the CPU path's inputs the user did not give, for runs of policies with a CPU path
    (hybrid) on a GPU profile that lacks them: the shipped CPU profile of the same model and an
    assumed KV copy bandwidth (sim.shipped.hybrid_defaults). Returns the spec and one sentence
    per assumption made (for the output and config.json)."""
    from batchsim.policies.registry import get_policy
    from batchsim.sim.profile import load_profile
    from batchsim.sim.shipped import hybrid_defaults

    if not any("cpu" in get_policy(p).paths for p in policies) or (
            spec.cpu_profile is not None and spec.kv_copy_gbps is not None):
        return spec, []
    profile = load_profile(spec.profile)
    cpu_profile, gbps, said = hybrid_defaults(
        profile.fingerprint.get("device_type"), profile.model.get("name"),
        spec.cpu_profile is not None or "cpu.packed.prefill" in profile.cost_models,
        spec.kv_copy_gbps is not None or profile.kv_copy is not None)
    spec = dataclasses.replace(
        spec, cpu_profile=spec.cpu_profile or (str(cpu_profile) if cpu_profile else None),
        kv_copy_gbps=spec.kv_copy_gbps if spec.kv_copy_gbps is not None else gbps)
    return spec, said


def add_max_concurrency_option(p: argparse.ArgumentParser) -> None:
    """--max-concurrency: closed-loop clients, as in `batchsim bench` and vllm bench serve."""
    p.add_argument("--max-concurrency", type=int, metavar="N",
                   help="at most N requests outstanding (closed-loop clients, as vllm bench "
                        "serve): a request due while N are outstanding arrives when one "
                        "finishes or is rejected (default: no limit)")

