# ruff: noqa: E501  (a table of hostile input lines reads best one per line)
"""A battery of hostile inputs, run through the CLI in-process: prints each case as handled or
NOT HANDLED and the count.

Handled means: the expected exit status (2 for bad input; 0 where the input is legal), for an
error exactly one stderr line starting "batchsim: error:", no exception escaping the CLI, the
files that were there before untouched, and no work folder left behind.
Usage: python bench/hostile_battery.py [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchsim.cli import main  # noqa: E402

GOOD = '{"arrival_s": 0.0, "input_tokens": 8, "output_tokens": 4}'
CPU = ROOT / "profiles" / "qwen2.5-0.5b-cpu.json"
Case = tuple[str, Callable[[Path], list[str]], int]


def trace_case(name: str, text: str, expect: int = 2, suffix: str = "jsonl") -> Case:
    def setup(d: Path) -> list[str]:
        (d / f"t.{suffix}").write_text(text)
        return ["trace", "stats", str(d / f"t.{suffix}")]
    return (f"trace: {name}", setup, expect)


def sim_case(name: str, extra: list[str], expect: int = 2) -> Case:
    return (f"simulate: {name}", lambda d: ["simulate", "--num-requests", "4", *extra, "--out",
                                            str(d / "run")], expect)


def profile_case(name: str, edit: Callable[[dict], None]) -> Case:
    def setup(d: Path) -> list[str]:
        doc = json.loads(CPU.read_text())
        edit(doc)
        (d / "p.json").write_text(json.dumps(doc))
        return ["simulate", "--policy", "continuous", "--num-requests", "3", "--profile",
                str(d / "p.json"), "--out", str(d / "run")]
    return (f"profile: {name}", setup, 2)


def cases() -> list[Case]:
    out: list[Case] = []
    lines = {
        "empty object": "{}", "null": "null", "number": "5", "string": '"x"', "list": "[]",
        "trailing comma": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4,}',
        "single quotes": "{'arrival_s': 0, 'input_tokens': 8, 'output_tokens': 4}",
        "brace-less": '"arrival_s": 0, "input_tokens": 8, "output_tokens": 4',
        "two objects": GOOD + GOOD, "object then garbage": GOOD + " x",
        "Infinity": '{"arrival_s": Infinity, "input_tokens": 8, "output_tokens": 4}',
        "-Infinity": '{"arrival_s": -Infinity, "input_tokens": 8, "output_tokens": 4}',
        "NaN length": '{"arrival_s": 0, "input_tokens": NaN, "output_tokens": 4}',
        "leading zero": '{"arrival_s": 01, "input_tokens": 8, "output_tokens": 4}',
        "hex": '{"arrival_s": 0x1, "input_tokens": 8, "output_tokens": 4}',
        "plus sign": '{"arrival_s": +1, "input_tokens": 8, "output_tokens": 4}',
        "underscore number": '{"arrival_s": 1_0, "input_tokens": 8, "output_tokens": 4}',
        "bare dot": '{"arrival_s": .5, "input_tokens": 8, "output_tokens": 4}',
        "string length": '{"arrival_s": 0, "input_tokens": "8", "output_tokens": 4}',
        "bool length": '{"arrival_s": 0, "input_tokens": true, "output_tokens": 4}',
        "null length": '{"arrival_s": 0, "input_tokens": null, "output_tokens": 4}',
        "list length": '{"arrival_s": 0, "input_tokens": [8], "output_tokens": 4}',
        "object length": '{"arrival_s": 0, "input_tokens": {"a": 8}, "output_tokens": 4}',
        "fractional length": '{"arrival_s": 0, "input_tokens": 8.5, "output_tokens": 4}',
        "zero output": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 0}',
        "negative arrival": '{"arrival_s": -1, "input_tokens": 8, "output_tokens": 4}',
        "1e400 arrival": '{"arrival_s": 1e400, "input_tokens": 8, "output_tokens": 4}',
        "huge int length": '{"arrival_s": 0, "input_tokens": 1' + "0" * 400 + ', "output_tokens": 4}',
        "2^53+ length": '{"arrival_s": 0, "input_tokens": 9007199254740993, "output_tokens": 4}',
        "huge int arrival": '{"arrival_s": 1' + "0" * 400 + ', "input_tokens": 8, "output_tokens": 4}',
        "NaN priority": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "priority": NaN}',
        "1e30 priority": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "priority": 1e30}',
        "string priority": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "priority": "1"}',
        "fractional priority": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "priority": 0.5}',
        "list id": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "id": [1]}',
        "hash_ids string": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "hash_ids": "1"}',
        "hash_ids floats": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "hash_ids": [1.5]}',
        "hash_ids 2^64": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "hash_ids": [18446744073709551616]}',
        "hash_ids nested": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "hash_ids": [[1]]}',
        "deep nesting": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "x": ' + "[" * 100000 + "]" * 100000 + "}",
        "NUL byte": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4}\x00',
        "control char in string": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "id": "a\x01"}',
        "lone surrogate escape": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "id": "\\ud800"}',
        "missing arrival": '{"input_tokens": 8, "output_tokens": 4}',
        "unclosed string": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "id": "a}',
        "key without value": '{"arrival_s": 0, "input_tokens": 8, "output_tokens": }',
        "arrival beyond 1e9 s": '{"arrival_s": 5e9, "input_tokens": 8, "output_tokens": 4}',
    }
    for name, line in lines.items():
        # legal lines: arrival 5e9 s is refused by simulate, not by stats; 2**53 + 1 reads as
        # 2**53, the largest length float64 holds exactly (then over any context)
        expect = 0 if name in ("lone surrogate escape", "arrival beyond 1e9 s",
                               "2^53+ length") else 2
        out.append(trace_case(f"native line 2: {name}", f"{GOOD}\n{line}\n{GOOD}\n", expect))
    out.append(trace_case("only blank lines", "\n\n  \n"))
    out.append(trace_case("empty file", ""))
    out.append(trace_case("binary garbage", "\x89PNG\r\n\x1a\n\x00\x00"))
    out.append(trace_case("UTF-16 BOM", "\ufeff\ufeff" + GOOD))
    out.append(trace_case("unsorted (sorted, with a warning)",
                          GOOD.replace("0.0", "5") + "\n" + GOOD + "\n", expect=0))
    moon = '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1, 2]}'
    for name, line in {"hash_ids overflow": moon.replace("[1, 2]", "[99999999999999999999]"),
                       "negative length": moon.replace("10", "-10"),
                       "NaN timestamp": moon.replace('"timestamp": 0', '"timestamp": NaN'),
                       "brace-less": moon.strip("{}"), "trailing garbage": moon + "]",
                       "string length": moon.replace("10", '"10"'),
                       "fractional length": moon.replace("10", "10.5"),
                       "timestamp 1e400": moon.replace('"timestamp": 0', '"timestamp": 1e400'),
                       "null hash_ids entry": moon.replace("[1, 2]", "[1, null]"),
                       "all zero lengths": moon.replace("10", "0")}.items():
        text = f"{moon}\n{line}\n" if name != "all zero lengths" else f"{line}\n"
        out.append(trace_case(f"mooncake line 2: {name}", text))
    burst = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    row = "1.0,ChatGPT,10,5,15,Conversation log\n"
    for name, body in {"text length": row.replace("10", "ten"),
                       "NaN timestamp": row.replace("1.0", "nan"),
                       "inf length": row.replace("10", "inf"),
                       "negative length": row.replace("10", "-10"),
                       "quoted cell over two lines": '1.0,"Chat\nGPT",x,5,15,y\n',
                       "unclosed quote": '1.0,"ChatGPT,10,5,15,y\n',
                       "short row": "1.0,ChatGPT\n", "stray carriage return": "1.0,Chat\rGPT,10,5\n",
                       "huge number": row.replace("10", "1" + "0" * 400),
                       "1e30 length": row.replace("10", "1e30")}.items():
        out.append(trace_case(f"burstgpt row: {name}", burst + row + body, suffix="csv"))
    azure = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    for name, body in {"bad date": "yesterday,10,5\n", "date 99999": "99999-01-01,10,5\n",
                       "empty cells": ",,\n2023-11-16 18:15:46,,5\n",
                       "fractional": "2023-11-16 18:15:46,1.5,5\n"}.items():
        out.append(trace_case(f"azure row: {name}", azure + "2023-11-16 18:15:45,10,5\n" + body,
                              suffix="csv"))
    bad_values = ["nan", "inf", "-inf", "-1", "1e308", "0"]
    for flag in ("--request-rate", "--burstiness", "--range-ratio", "--kv-copy-gbps",
                 "--kv-copy-latency-us"):
        for value in bad_values:
            legal = (flag == "--request-rate" and value == "inf") or (
                flag == "--range-ratio" and value == "0") or (
                flag == "--kv-copy-latency-us" and value == "0")
            policy = "hybrid" if flag.startswith("--kv") else "continuous"
            extra = ["--kv-copy-gbps", "10", "--profile", str(CPU), "--cpu-profile", str(CPU)] \
                if flag == "--kv-copy-latency-us" else []
            if legal:
                continue
            out.append(sim_case(f"{flag} {value}", ["--policy", policy, *extra, flag, value]))
    for flag in ("--time-scale", "--target-rate", "--start", "--duration", "--sample"):
        for value in ("nan", "inf", "-1", "1e308"):
            if flag == "--duration" and value == "inf":
                continue
            out.append(sim_case(f"{flag} {value}", ["--policy", "continuous", "--trace",
                                                    str(ROOT / "traces" / "chat.jsonl"), flag,
                                                    value]))
    for slo in ("ttft:nan", "tpot:inf", "e2el:-1", "ttft:0", "ttft:1e300", "bogus:1", "ttft"):
        out.append(sim_case(f"--goodput {slo}", ["--policy", "continuous", "--goodput", slo]))
    knobs = [("continuous", k) for k in ("block_size=1000000000000", "block_size=0",
                                         "max_num_seqs=10000000", "max_num_seqs=-1",
                                         "max_num_batched_tokens=99999999999",
                                         "gpu_memory_utilization=nan",
                                         "gpu_memory_utilization=inf",
                                         "gpu_memory_utilization=1.5",
                                         "long_prefill_token_threshold=1e3", "policy=lifo",
                                         "enable_chunked_prefill=maybe")]
    knobs += [("dynamic", k) for k in ("priority_levels=10000000000", "max_batch_size=0",
                                       "max_queue_delay_microseconds=99999999999999",
                                       "preferred_batch_size=a", "preferred_batch_size=99",
                                       "default_timeout_microseconds=-5", "timeout_action=DROP")]
    knobs += [("static", k) for k in ("max_queue_delay_ms=nan", "max_queue_delay_ms=inf",
                                      "max_queue_delay_ms=-1", "max_batch_size=100000000")]
    knobs += [("hybrid", k) for k in ("arrival_gap_weight=nan", "arrival_gap_weight=0",
                                      "cpu_max_prompt_tokens=-2", "hold_max_batch=1e9")]
    for policy, knob in knobs:
        out.append(sim_case(f"--set {knob} ({policy})", ["--policy", policy, "--set", knob]))
    for name, edit in {
        "zero-cost models": lambda d: [e.update(terms=[{"const": 0.0}]) or e.pop("curve", None)
                                       for e in d["cost_models"].values()],
        "Infinity context": lambda d: d["model"].update(max_model_len=math.inf),
        "Infinity memory": lambda d: d["memory"].update(total_bytes=math.inf),
        "NaN memory": lambda d: d["memory"].update(kv_bytes_per_token=math.nan),
        "cost_models a list": lambda d: d.update(cost_models=[]),
        "model a list": lambda d: d.update(model=[1]),
        "negative coefficient": lambda d: d["cost_models"]["packed.decode"].update(
            terms=[{"const": -1.0}]),
        "string coefficient": lambda d: d["cost_models"]["packed.decode"].update(
            terms=[{"const": "x"}]),
        "huge context": lambda d: d["model"].update(max_model_len=10**40),
        "kv_copy NaN": lambda d: d.update(kv_copy={"bytes_per_s": math.nan}),
        "no schema": lambda d: d.pop("schema"),
        "terms an object": lambda d: d["cost_models"]["packed.prefill"].update(terms={}),
    }.items():
        out.append(profile_case(name, edit))

    def existing_run(d: Path, files: dict[str, str]) -> None:
        (d / "run").mkdir()
        for k, v in files.items():
            (d / "run" / k).write_text(v)

    for name, files in {"not a run folder": {"notes.txt": "x"},
                        "run folder without --force": {"metrics.json": "{}"}}.items():
        def setup(d: Path, files=files, name=name) -> list[str]:
            existing_run(d, files)
            return ["simulate", "--policy", "static", "--num-requests", "3", "--out",
                    str(d / "run"), *(["--force"] if "not a run" in name else [])]
        out.append((f"output: {name}", setup, 2))
    for target in (".", "..", "/", "HOME", "REPO"):
        def setup(d: Path, target=target) -> list[str]:
            os.environ["HOME"] = str(d)
            out_path = {"HOME": str(d), "REPO": str(ROOT)}.get(target, target)
            return ["simulate", "--policy", "static", "--num-requests", "3", "--out", out_path,
                    "--force"]
        out.append((f"output: --out {target} --force", setup, 2))
    for name, argv in {"report --out over a trace": ["report", "RUN", "--out", "TRACE"],
                       "stats --html over a trace": ["trace", "stats", "TRACE", "--html",
                                                     "TRACE2"],
                       "convert --out over a trace": ["trace", "convert", "TRACE2", "--out",
                                                      "TRACE"],
                       "--out a file, --force": ["simulate", "--policy", "static", "--out",
                                                 "TRACE", "--force"],
                       "report --out = its input": ["report", "RUN", "--out",
                                                    "RUN/metrics.json", "--force"],
                       "--out under a file": ["simulate", "--policy", "static", "--out",
                                              "TRACE/x"]}.items():
        def setup(d: Path, argv=argv) -> list[str]:
            (d / "t.jsonl").write_text(GOOD + "\n")
            (d / "t2.jsonl").write_text(GOOD + "\n")
            main(["simulate", "--policy", "static", "--num-requests", "3", "--out",
                  str(d / "r"), "--quiet"])
            sub = {"RUN": str(d / "r"), "TRACE": str(d / "t.jsonl"), "TRACE2": str(d / "t2.jsonl"),
                   "RUN/metrics.json": str(d / "r" / "metrics.json"),
                   "TRACE/x": str(d / "t.jsonl" / "x")}
            return [sub.get(a, a) for a in argv]
        out.append((f"output: {name}", setup, 2))
    for name, content in {"metrics.json truncated": '{"a": ', "metrics.json a list": "[]",
                          "metrics.json empty": "", "metrics.json NaN fields": '{"x": NaN}'}.items():
        def setup(d: Path, content=content) -> list[str]:
            main(["simulate", "--policy", "static", "--num-requests", "3", "--out",
                  str(d / "r"), "--quiet"])
            (d / "r" / "metrics.json").write_text(content)
            return ["report", str(d / "r")]
        out.append((f"report: {name}", setup, 2))
    out.append(("trace: a folder", lambda d: ["trace", "stats", str(d)], 2))
    out.append(("trace: /dev/zero", lambda d: ["trace", "stats", "/dev/zero"], 2))
    out.append(("trace: missing file", lambda d: ["trace", "stats", str(d / "nope")], 2))
    out.append(("sweep: 10^12 rates", lambda d: ["sweep", "--policy", "continuous",
                                                  "--request-rate", "1:2:1000000000000",
                                                  "--out", str(d / "s")], 2))
    out.append(("sweep: vary explosion", lambda d: ["sweep", "--policy", "continuous",
                                                     "--request-rate", "1", "--vary",
                                                     "max_num_seqs=" + ",".join(
                                                         map(str, range(1, 200))), "--vary",
                                                     "block_size=" + ",".join(
                                                         map(str, range(1, 200))),
                                                     "--out", str(d / "s")], 2))
    out.append(("sweep: --request-rate nan", lambda d: ["sweep", "--policy", "continuous",
                                                         "--request-rate", "nan", "--out",
                                                         str(d / "s")], 2))
    out.append(("simulate: --num-requests 10^11", lambda d: ["simulate", "--policy", "static",
                                                              "--num-requests", "100000000000",
                                                              "--out", str(d / "r")], 2))
    out.append(sim_case("--seed 10^30 (legal: numpy takes any seed)",
                        ["--policy", "continuous", "--seed", "1" + "0" * 30], expect=0))
    for name, extra in {"--seed -1": ["--seed", "-1"],
                        "--max-input-len 0 (trace)": ["--trace", str(ROOT / "traces" / "chat.jsonl"),
                                                      "--max-input-len", "0"],
                        "--max-input-len 10^30 (trace)": ["--trace", str(ROOT / "traces" / "chat.jsonl"),
                                                          "--max-input-len", "1" + "0" * 30],
                        "--lengths-from missing": ["--lengths-from", "/nonexistent.jsonl"],
                        "--lengths-from a folder": ["--lengths-from", "/tmp"],
                        "--input-len 10^12": ["--input-len", "1000000000000"],
                        "--output-len -1": ["--output-len", "-1"],
                        "--trace with --request-rate": ["--trace", str(ROOT / "traces" / "chat.jsonl"),
                                                        "--request-rate", "5"],
                        "--trace-format bogus": ["--trace", str(ROOT / "traces" / "chat.jsonl"),
                                                 "--trace-format", "bogus"],
                        "--trace-format azure on JSONL": ["--trace", str(ROOT / "traces" / "chat.jsonl"),
                                                          "--trace-format", "azure"],
                        "--jitter on an analytic profile": ["--jitter"],
                        "--cpu-profile with continuous": ["--cpu-profile", str(CPU)]}.items():
        out.append(sim_case(name, ["--policy", "continuous", *extra]))
    # this wave's flags: replicas and routers, closed-loop clients, shared prefixes, results
    wave = {
        "--replicas 0": ["--replicas", "0"], "--replicas nan": ["--replicas", "nan"],
        "--replicas 2.5": ["--replicas", "2.5"], "--replicas 10^9": ["--replicas", "1000000000"],
        "--router nope": ["--replicas", "2", "--router", "nope"],
        "--max-concurrency 0": ["--max-concurrency", "0"],
        "--max-concurrency -3": ["--max-concurrency", "-3"],
        "--max-concurrency inf": ["--max-concurrency", "inf"],
        "--max-concurrency with --replicas 2": ["--max-concurrency", "2", "--replicas", "2"],
        "--prefix-len -1": ["--prefix-len", "-1"], "--prefix-len nan": ["--prefix-len", "nan"],
        "--num-prefix-groups without --prefix-len": ["--num-prefix-groups", "3"],
        "--set enable_prefix_caching=maybe": ["--set", "enable_prefix_caching=maybe"],
        "--result-filename without --save-result": ["--result-filename", "r.json"],
        "--result-filename a path": ["--save-result", "--result-filename", "../x/r.json"],
    }
    for name, extra in wave.items():
        out.append(sim_case(name, ["--policy", "continuous", *extra]))
    out.append(("plan: no --goodput", lambda d: ["plan", "--policy", "continuous",
                                                  "--request-rate", "5", "--out", str(d / "p")], 2))
    out.append(("plan: --max-replicas 0", lambda d: [
        "plan", "--policy", "continuous", "--request-rate", "5", "--goodput", "ttft:500",
        "--max-replicas", "0", "--out", str(d / "p")], 2))
    out.append(("plan: --max-concurrency", lambda d: [
        "plan", "--policy", "continuous", "--request-rate", "5", "--goodput", "ttft:500",
        "--max-concurrency", "4", "--out", str(d / "p")], 2))
    out.append(("plan: --request-rate nan", lambda d: [
        "plan", "--policy", "continuous", "--request-rate", "nan", "--goodput", "ttft:500",
        "--out", str(d / "p")], 2))
    out.append(("sweep: --backend nope", lambda d: ["sweep", "--policy", "continuous",
                                                    "--request-rate", "1", "--backend", "nope",
                                                    "--out", str(d / "s")], 2))
    out.append(("sweep: --workers 0", lambda d: ["sweep", "--policy", "continuous",
                                                 "--request-rate", "1", "--workers", "0",
                                                 "--out", str(d / "s")], 2))
    out.append(("sweep: unknown policy", lambda d: ["sweep", "--policy", "continuous,nope",
                                                    "--request-rate", "1", "--out", str(d / "s")], 2))
    out.append(("sweep: --vary without values", lambda d: ["sweep", "--policy", "continuous",
                                                           "--request-rate", "1", "--vary",
                                                           "max_num_seqs=", "--out", str(d / "s")], 2))
    out.append(("sweep: --request-rate 5:1:3", lambda d: ["sweep", "--policy", "continuous",
                                                          "--request-rate", "5:1:3", "--out",
                                                          str(d / "s")], 2))
    out.append(("validate: --loads nan", lambda d: ["validate", "--profile", str(CPU), "--policy",
                                                    "static", "--loads", "nan", "--out",
                                                    str(d / "v")], 2))
    out.append(("validate: --out . --force", lambda d: ["validate", "--profile", str(CPU),
                                                        "--policy", "static", "--out", ".",
                                                        "--force"], 2))

    def existing_profile(d: Path) -> list[str]:
        (d / "p.json").write_text(CPU.read_text())
        return ["profile", "--model", "tiny-qwen2", "--device", "cpu", "--out", str(d / "p.json")]
    out.append(("profile: --out an existing profile, no --force", existing_profile, 2))
    out.append(("profile: --merge --out an existing file", lambda d: (
        (d / "x.json").write_text("mine"),
        ["profile", "--merge", str(CPU), str(CPU), "--out", str(d / "x.json")])[1], 2))
    return out


def run_case(case: Case) -> tuple[bool, str]:
    _name, setup, expect = case
    with tempfile.TemporaryDirectory() as folder:
        d = Path(folder)
        cwd, home = os.getcwd(), os.environ.get("HOME")
        os.chdir(d)
        try:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                argv = setup(d)
            before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
            err = io.StringIO()
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    try:
                        code = main(argv)
                    except SystemExit as e:  # argparse's own errors
                        code = int(e.code or 0)
            except BaseException as e:
                return False, f"exception escaped: {type(e).__name__}: {e}\n" + \
                    "".join(traceback.format_exception(e)[-3:])
            text = err.getvalue()
            problems = []
            if code != expect:
                problems.append(f"exit {code}, expected {expect}")
            errors = [line for line in text.splitlines() if line.startswith("batchsim: error")]
            if expect == 2 and (len(errors) != 1 or "Traceback" in text):
                problems.append(f"stderr {text!r}")
            for path, data in before.items():
                if not path.exists() or (path.read_bytes() != data and expect == 2):
                    problems.append(f"{path.name} changed or lost")
            left = [p.name for p in d.rglob(".*") if p.is_dir()]
            if left:
                problems.append(f"left {left}")
            return not problems, "; ".join(problems) or text.strip()[:100]
        finally:
            os.chdir(cwd)
            if home is not None:
                os.environ["HOME"] = home


def main_battery() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", default="", help="run only cases whose name contains this")
    args = p.parse_args()
    selected = [c for c in cases() if args.k in c[0]]
    handled = 0
    for case in selected:
        ok, detail = run_case(case)
        handled += ok
        print(f"{'handled    ' if ok else 'NOT HANDLED'}  {case[0]}  -- {detail[:150]}",
              flush=True)
    print(f"\n{handled} of {len(selected)} hostile cases handled")


if __name__ == "__main__":
    main_battery()
