"""`vllm bench serve`'s result options, shared by `simulate` and `bench`: which latency sections
and percentiles the summary prints (--percentile-metrics, --metric-percentiles) and the JSON
result it saves (--save-result, --save-detailed, --result-dir, --result-filename)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchsim.sim.atomic import atomic_file
from batchsim.sim.outputs import check_output, json_safe
from batchsim.summary import (
    PERCENTILE_METRICS,
    PERCENTILES,
    parse_metric_percentiles,
    parse_percentile_metrics,
)

RESULT_FILENAME = "result.json"
# what a run folder holds besides the result (sim.run, reports): names the JSON may not take
RUN_FOLDER_FILES = ("config.json", "metrics.json", "requests.csv", "steps.csv", "itl_cdf.csv",
                    "report.html")


def add_result_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vllm bench serve's result options")
    g.add_argument("--percentile-metrics", default=",".join(PERCENTILE_METRICS),
                   help="latency sections the summary prints (and --save-result saves), "
                        f"comma-separated (default {','.join(PERCENTILE_METRICS)})")
    g.add_argument("--metric-percentiles", default="99",
                   help="percentiles printed and saved beside mean and median, comma-separated, "
                        f"from {','.join(map(str, PERCENTILES))} (default 99)")
    g.add_argument("--save-result", action="store_true",
                   help="also write the run as vllm bench serve's result JSON (by default "
                        f"{RESULT_FILENAME} in the run folder)")
    g.add_argument("--save-detailed", action="store_true",
                   help="with --save-result: add the per-request input_lens, output_lens, ttfts, "
                        "itls and errors")
    g.add_argument("--result-dir", type=Path, metavar="DIR",
                   help="with --save-result: the folder for the JSON (default: the run folder; "
                        "created if missing; an existing JSON is replaced only with --force)")
    g.add_argument("--result-filename", metavar="NAME",
                   help=f"with --save-result: the JSON's file name, no folder part (default "
                        f"{RESULT_FILENAME})")


@dataclass(frozen=True)
class ResultOptions:
    """What the summary shows and where (if anywhere) the result JSON goes."""

    percentile_metrics: tuple[str, ...]
    metric_percentiles: tuple[int, ...]
    save: bool
    detailed: bool
    name: str  # the JSON's file name
    path: Path | None  # None: inside the run folder (as name), written with it

    def writer(self, make: Callable[[Any], dict[str, Any]]) -> tuple[Callable[..., None], ...]:
        """The run-folder writer of the JSON when it goes into the run folder, else ()."""
        if not self.save or self.path is not None:
            return ()

        def write(folder: Path, run: Any) -> None:
            (folder / self.name).write_text(_dumps(make(run)))
        return (write,)

    def write_outside(self, doc: dict[str, Any]) -> Path | None:
        """Write the JSON at self.path atomically (checked before the run); its path."""
        if not self.save or self.path is None:
            return None
        with atomic_file(self.path) as f:
            f.write(_dumps(doc))
        return self.path


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(json_safe(doc), allow_nan=False) + "\n"  # strict JSON, one line as vLLM


def result_options(args: argparse.Namespace) -> ResultOptions:
    """Parse and check the options before any work: bad names, an existing JSON without
    --force, companions without --save-result."""
    shown = (parse_percentile_metrics(args.percentile_metrics),
             parse_metric_percentiles(args.metric_percentiles))
    companions = [f for f, v in (("--save-detailed", args.save_detailed),
                                 ("--result-dir", args.result_dir),
                                 ("--result-filename", args.result_filename)) if v]
    if companions and not args.save_result:
        raise ValueError(f"{', '.join(companions)} without --save-result: add --save-result")
    name = args.result_filename or RESULT_FILENAME
    if args.result_filename is not None and (Path(name).name != name or name in ("", ".", "..")):
        raise ValueError(f"--result-filename {name!r}: give a plain file name (the folder is "
                         "--result-dir)")
    path = None
    if args.save_result and args.result_dir is None and name in RUN_FOLDER_FILES:
        raise ValueError(f"--result-filename {name}: the run folder has a file of that name; "
                         "choose another")
    if args.save_result and args.result_dir is not None:
        path = args.result_dir / name
        if not args.result_dir.exists():
            # where it may go, and its parent created
            check_output(args.result_dir, False, "folder", flag="--result-dir")
            args.result_dir.mkdir()
        check_output(path, args.force, "file", flag="--result-filename")
    return ResultOptions(*shown, args.save_result, args.save_detailed, name, path)
