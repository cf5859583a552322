"""The profile file on disk while it is being measured: atomic saves, partial files, --resume.

A run saves its document after every grid point (temp file + ``os.replace``, so a crash or
Ctrl-C never leaves half a file). Until the run finishes the document says ``"complete": false``;
``batchsim.sim.profile.load_profile`` refuses such a file, and ``batchsim profile --resume``
continues it.
No torch here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from batchsim.profiler.profiling.host import RESUME_KEYS
from batchsim.sim.atomic import atomic_file
from batchsim.sim.profile import SCHEMA, SCHEMA_VERSION

logger = logging.getLogger(__name__)

# The key that marks a profile as finished; a partial file has "complete": false.
COMPLETE_KEY = "complete"


def save_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write doc as JSON to path atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    with atomic_file(path, sync=True) as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")


def check_writable(path: Path) -> None:
    """Raise OSError with a one-line reason if a profile cannot be written at path."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OSError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise OSError(f"cannot write {path}: it is a folder")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OSError(f"cannot write {path}: permission denied")


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_text()
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is corrupted (not valid JSON: {e}); delete it or choose another --out"
        ) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a batchsim profile; delete it or choose another --out")
    return doc


def check_fresh_target(path: Path) -> None:
    """A new run may replace a finished profile, never an interrupted one or a foreign file."""
    if not path.exists():
        return
    doc = _read(path)
    if doc.get(COMPLETE_KEY) is False and doc.get("measured"):
        raise ValueError(
            f"{path} holds an interrupted profile: add --resume to continue it, or delete it"
        )
    logger.warning("%s exists and will be replaced by the new profile", path)


def load_partial(
    path: Path, expected: dict[str, Any], run: dict[str, Any | None]
) -> dict[str, Any]:
    """Load an interrupted profile to resume; refuse one measured differently or damaged.

    expected: this run's fingerprint; run: grid/seed/repeats given by the user (None = take the
    file's).
    """
    if not path.exists():
        raise ValueError(f"nothing to resume: {path} does not exist; run without --resume")
    doc = _read(path)
    if doc.get(COMPLETE_KEY) is not False:
        raise ValueError(
            f"{path} is already a complete profile: nothing to resume (delete it or choose "
            "another --out to measure again)"
        )
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {doc.get('schema_version')!r} cannot be resumed "
                         f"by this batchsim ({SCHEMA_VERSION}); delete it and measure again")
    fp = doc.get("fingerprint")
    points, measured = doc.get("points"), doc.get("measured")
    if not isinstance(fp, dict) or not isinstance(points, list) or not isinstance(measured, list):
        raise ValueError(f"{path} is corrupted (fingerprint, points or measured list missing); "
                         "delete it and measure again")
    saved = doc.get("run")
    types: dict[str, type | tuple[type, ...]] = {
        "grid": str, "seed": int, "repeats": int, "warmup": int, "min_point_s": (int, float),
        "max_repeats": int, "timing": str}
    bad = ([k for k, t in types.items() if not isinstance(saved.get(k), t)]
           if isinstance(saved, dict) else ["run"])
    bad += [k for k in ("skipped", "kv_copy_points") if not isinstance(doc.get(k, []), list)]
    if bad:
        raise ValueError(f"{path} is corrupted ({', '.join(bad)} missing or of the wrong type); "
                         "delete it and measure again")
    assert isinstance(saved, dict), "a run that is not a dict is in `bad`"
    doc.setdefault("skipped", [])
    doc.setdefault("kv_copy_points", [])
    diff = [k for k in RESUME_KEYS if fp.get(k) != expected.get(k)]
    if diff:
        was = ", ".join(f"{k}={fp.get(k)!r}" for k in diff)
        now = ", ".join(f"{k}={expected.get(k)!r}" for k in diff)
        raise ValueError(
            f"cannot resume {path}: it was measured with {was}, this run has {now}; use the same "
            "--model/--device/--dtype/--threads on the same machine, or another --out"
        )
    # a point appended just before an interrupt but not yet listed as measured: drop it, it
    # will be measured again
    done = set(measured)
    for key in ("points", "kv_copy_points"):
        doc[key] = [p for p in doc.get(key) or []
                    if isinstance(p, dict) and str(p.get("id", "")).split("#")[0] in done]
    for key, value in run.items():
        if value is not None and saved.get(key) != value:
            flag = "clock" if key == "timing" else key
            raise ValueError(f"cannot resume {path} with --{flag} {value}: it was started with "
                             f"--{flag} {saved.get(key)}; drop the option or use the same value")
    return doc


def fit_document(doc: dict[str, Any]) -> None:
    """Fit the cost models and the KV copy model of a profile document from its raw points, in
    place (numpy + scipy only). Used at the end of a run and by --refit."""
    from batchsim.profiler.profiling.fit import fit_copy, fit_points
    from batchsim.sim.cost_model import REQUIRED_MODELS

    run = doc.get("run")
    seed = int(run.get("seed", 0)) if isinstance(run, dict) else 0
    fits = fit_points(doc["points"], folds=5, seed=seed)
    missing = [k for k in REQUIRED_MODELS if k not in fits]
    if missing:
        raise ValueError(f"no measured points for {missing} (all skipped?); see 'skipped' in "
                         "the profile")
    doc["cost_models"] = {key: res.to_json() for key, res in fits.items()}
    copies = doc.get("kv_copy_points") or []
    if len(copies) >= 2:
        doc["kv_copy"] = fit_copy([p["num_bytes"] for p in copies],
                                  [p["time_s"] for p in copies])
    elif copies:
        logger.warning("one KV copy size fitted the pool: no copy bandwidth fitted")


def refit_profile(path: Path, out: Path | None = None) -> dict[str, Any]:
    """Refit the cost models (and the KV copy model) of a finished profile from its raw points
    and save the result to `out` (None: in place), atomically. No measurement and no torch: a
    better fit does not need the GPU again. Deterministic: the same points give the same bytes
    (the fit's folds are seeded and no timestamp is added). Returns the new document."""
    from batchsim.sim.profile import load_profile

    path = Path(path)
    out = Path(out) if out is not None else path
    doc = _read(path)
    if doc.get(COMPLETE_KEY) is False:
        raise ValueError(f"{path} is an unfinished profile: finish it with --resume first")
    points = doc.get("points")
    if doc.get("source") != "measured" or not isinstance(points, list) or not points:
        raise ValueError(f"{path} has no measured points to refit (source "
                         f"{doc.get('source')!r})")
    try:
        fit_document(doc)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is corrupted (a raw point lacks {e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if isinstance(doc.get("run"), dict):
        doc["run"]["refitted"] = True  # not a time: refitting the same points twice is a no-op
    check_writable(out)
    tmp = out.with_name(f".{out.name}.refit")
    save_atomic(tmp, doc)
    try:
        load_profile(tmp)  # the simulator must accept the result before it replaces anything
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return doc


# Fingerprint and run fields that must agree for passes to be merged: the same model, weights
# config, dtype, device, timing clock and grid (the host may differ only if the user says so by
# merging; it is recorded per pass).
_MERGE_KEYS = (("fingerprint", "model"), ("fingerprint", "config_hash"), ("fingerprint", "dtype"),
               ("fingerprint", "device"), ("fingerprint", "threads"), ("run", "grid"),
               ("run", "timing"))


def merge_profiles(parts: list[Path], out: Path) -> dict[str, Any]:
    """One profile from several finished passes over the same grid, then refitted: each grid
    point keeps every pass's samples and its time becomes their median.

    Why: on a shared machine the same step shape can measure 20-30% apart from one burst of
    repeats to the next (the machine's speed drifts over minutes), so one pass leaves that drift
    on individual points and bends the fitted curves. Passes measured at different times (and in
    different shuffled orders: give each a different --seed) spread each point's repeats over
    time, and the median is the typical speed. Written atomically; the parts are not modified.
    """
    if len(parts) < 2:
        raise ValueError("--merge needs at least two profiles of the same grid")
    docs = [_read(Path(p)) for p in parts]
    for path, doc in zip(parts, docs, strict=True):
        if doc.get(COMPLETE_KEY) is False or doc.get("source") != "measured":
            raise ValueError(f"{path} is not a finished measured profile: cannot merge it")
        for section, key in _MERGE_KEYS:
            mine = (doc.get(section) or {}).get(key)
            first = (docs[0].get(section) or {}).get(key)
            if mine != first:
                raise ValueError(f"{path}: {section}.{key} is {mine!r} but {parts[0]} has "
                                 f"{first!r}; only passes of the same setup can be merged")
    by_id: dict[str, list[dict[str, Any]]] = {}
    for path, doc in zip(parts, docs, strict=True):
        for point in doc.get("points") or []:
            if "id" not in point or not point.get("samples_s"):
                raise ValueError(f"{path} is corrupted (a raw point lacks its id or samples)")
            by_id.setdefault(point["id"], []).append(point)
    merged = dict(docs[0])
    merged["points"] = [_merge_point(group) for group in by_id.values()]
    run = dict(merged.get("run") or {})
    run["passes"] = {"count": len(docs), "files": [str(p) for p in parts],
                     "seeds": [(d.get("run") or {}).get("seed") for d in docs],
                     "elapsed_s": [(d.get("run") or {}).get("elapsed_s") for d in docs],
                     "created": [(d.get("fingerprint") or {}).get("created") for d in docs]}
    run["elapsed_s"] = sum(float((d.get("run") or {}).get("elapsed_s") or 0.0) for d in docs)
    merged["run"] = run
    tmp = out.with_name(f".{out.name}.merge")
    save_atomic(tmp, merged)
    try:
        doc = refit_profile(tmp)  # fits, and checks that the simulator loads the result
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return doc


def _merge_point(group: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    samples = [float(t) for pt in group for t in pt["samples_s"]]
    q25, q50, q75 = np.percentile(samples, [25, 50, 75])

    def median_of(key: str) -> float | None:
        values = [pt[key] for pt in group if pt.get(key) is not None]
        return float(np.median(values)) if values else None

    merged = {**group[0], "time_s": float(q50), "spread_s": float(q75 - q25),
              "repeats": len(samples), "samples_s": samples, "passes": len(group)}
    for key in ("wall_s", "thread_s", "gpu_s", "prep_s"):
        if key in group[0]:
            merged[key] = median_of(key)
    return merged
