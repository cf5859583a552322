"""Sweep points as Ray tasks: the same point function as the local workers, on a Ray cluster.

Ray is imported here only, inside the function, so the sweep extra (`pip install
'batchsim[sweep]'`) is needed only by `--backend ray`. Each point is one task that returns its
metrics row; rows are put back in grid order by the caller, and a point's randomness comes from
its spec, so the table is the local backend's byte for byte. Every node must have batchsim (the
same version) installed; the profile and trace files are read by the task, so on a cluster of
several machines they must be at the same absolute path on every node (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from batchsim.sim.errors import UsageError
from batchsim.sim.run import RunSpec

log = logging.getLogger(__name__)

# How long reaching a cluster's address may take: ray.init itself retries an unreachable GCS
# without end (each try logs a warning), so the address is checked first.
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """UsageError unless a TCP connection to the cluster's address (`HOST:PORT` or
    `ray://HOST:PORT`; RAY_ADDRESS when address is None) opens within timeout_s. `auto`,
    `local` and no address at all are not network addresses and are not checked. A port that
    accepts connections but is not Ray's is left to Ray."""
    target = address if address is not None else (os.environ.get("RAY_ADDRESS") or None)
    if target is None or target in ("auto", "local"):
        return
    where = f"--address {target}" if address is not None else f"RAY_ADDRESS={target}"
    host, sep, port = target.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{where}: not a Ray address; use auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise UsageError(f"cannot reach Ray at {where} within {timeout_s:g} s ({reason}): is "
                         "the cluster running, and is that its GCS address "
                         "(`ray start --head` prints it)?") from None


def absolute_paths(spec: RunSpec) -> RunSpec:
    """The spec with its input files as absolute paths: a Ray worker does not run in the
    driver's working directory. Shipped profile names stay names (resolved on the worker)."""

    def absolute(path: str | None) -> str | None:
        # a file here -> its absolute path; a shipped name or a missing file stays as given
        return str(Path(path).resolve()) if path is not None and Path(path).exists() else path

    return dataclasses.replace(spec, profile=absolute(spec.profile),
                               cpu_profile=absolute(spec.cpu_profile),
                               trace=absolute(spec.trace))


def run_on_ray(run_point: Callable[[RunSpec], dict[str, Any]], specs: Sequence[RunSpec],
               address: str | None, progress: Callable[[int], None] | None = None,
               connect_timeout_s: float = CONNECT_TIMEOUT_S) -> list[dict[str, Any]]:
    """Run `run_point` (sim.sweep.sweep's, an importable function: Ray sends it by name) on
    every spec as a Ray task (one CPU each) -> its rows in the specs' order.

    address: Ray's (`auto`, `HOST:PORT`, `ray://HOST:PORT`); None: the Ray instance this
    process is already connected to, else RAY_ADDRESS, else a new local instance. A connection
    made here is closed at the end; one the caller made is left open. An address that does
    not answer within connect_timeout_s is a UsageError (check_reachable), not a hang.
    """
    import ray  # the sweep extra; the caller checked it is installed

    started = not ray.is_initialized()
    if started:
        check_reachable(address, connect_timeout_s)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"at --address {address}" if address else "(local instance)"
            raise UsageError(f"cannot start or reach Ray {where}: {e}") from None
    elif address is not None:
        log.warning("already connected to Ray: --address %s is not used", address)
    waiting: list[Any] = []
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_point)
        pending = {task.remote(absolute_paths(spec)): i for i, spec in enumerate(specs)}
        waiting = list(pending)
        log.info("%d sweep points submitted to Ray (%s CPUs)", len(specs),
                 ray.cluster_resources().get("CPU", "?"))
        rows: list[dict[str, Any] | None] = [None] * len(specs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            for ref in done:
                rows[pending[ref]] = ray.get(ref)
            if progress:
                progress(len(specs) - len(waiting))
    except BaseException:
        for ref in waiting:  # Ctrl-C or a failed point: the cluster stops the rest too
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    assert all(row is not None for row in rows), "a Ray task returned no row"
    return [row for row in rows if row is not None]
