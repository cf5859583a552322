"""`sweep --backend ray`: the points as Ray tasks give the local backend's sweep.csv byte for
byte; without ray installed, one line naming the sweep extra.

The Ray test starts a local instance on loopback only (127.0.0.1, no dashboard, no usage
stats) in a child process bounded in time, whose whole process group is killed at the end, so
no Ray process outlives the test. It skips with the reason when ray is not installed or the
instance cannot start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from batchsim.cli import main
from batchsim.sim.errors import UsageError
from batchsim.sim.run import RunSpec
from batchsim.sim.sweep.ray_backend import absolute_paths, check_reachable
from tests.test_extras import run_without

ROOT = Path(__file__).resolve().parents[2]
# a relative --profile: Ray's workers run elsewhere, so the backend sends absolute paths
SWEEP = ["sweep", "--policy", "continuous", "--vary", "max_num_seqs=2,16",
         "--request-rate", "4,20,40,inf", "--num-requests", "40", "--input-len", "64",
         "--output-len", "8", "--goodput", "ttft:300", "--profile", "p.json", "--quiet"]
START_S = 120  # a cold Ray start takes ~15 s on the shared 2-core machine
SWEEP_S = 120

# Runs in the child: Ray on loopback, the sweep through the CLI (which reuses this connection),
# then Ray shut down. Exit 3 = Ray could not start (the test skips).
RAY_CHILD = """
import sys
import ray
try:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", _temp_dir={temp!r})
except Exception as e:  # any failure to start is a skip, reported with its reason
    print(f"ray cannot start: {{type(e).__name__}}: {{e}}", file=sys.stderr)
    sys.exit(3)
print("ray started", flush=True)
from batchsim.cli import main
from batchsim.progress import Progress
seen = []  # what the command's progress bar was told, point by point
draw = Progress.update
Progress.update = lambda self, done: (seen.append(done), draw(self, done))[-1]
try:
    code = main({argv!r})
finally:
    ray.shutdown()
print("progress", seen)
sys.exit(code)
"""

LOOPBACK_ONLY = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's switch to use the loopback IP as node IP
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report sent anywhere
    "RAY_ADDRESS": "",  # never join a cluster from the environment
}


def _run_on_ray(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    temp = tempfile.mkdtemp(prefix="bsray-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, **LOOPBACK_ONLY}
    child = subprocess.Popen([sys.executable, "-c", RAY_CHILD.format(temp=temp, argv=argv)],
                             cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=START_S + SWEEP_S)
    except subprocess.TimeoutExpired:
        out, err = "", ""
        timed_out = True
    else:
        timed_out = False
    finally:
        # the child's group holds Ray's processes (gcs_server, raylet, workers)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        shutil.rmtree(temp, ignore_errors=True)
    if timed_out:
        pytest.fail(f"the Ray sweep did not finish in {START_S + SWEEP_S} s")
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_ray_backend_gives_the_local_table_byte_for_byte(tmp_path, monkeypatch):
    """Eight points as Ray tasks on a 2-CPU local instance == the same grid in local processes."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'batchsim[sweep]')")
    shutil.copy(ROOT / "profiles" / "qwen2.5-0.5b-cpu.json", tmp_path / "p.json")
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "local"
    assert main([*SWEEP, "--workers", "2", "--out", str(local)]) == 0
    ray_out = tmp_path / "ray"
    done = _run_on_ray([*SWEEP, "--backend", "ray", "--out", str(ray_out)], tmp_path)
    if done.returncode == 3:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ray started" in done.stdout
    assert f"progress {list(range(1, 9))}" in done.stdout  # one update per finished point
    assert (ray_out / "sweep.csv").read_bytes() == (local / "sweep.csv").read_bytes()
    assert len((ray_out / "sweep.csv").read_text().splitlines()) == 1 + 8


def test_ray_backend_without_ray_is_one_line_naming_the_extra(tmp_path):
    done = run_without({"ray"}, ["sweep", "--policy", "continuous", "--request-rate", "4",
                                 "--backend", "ray", "--out", str(tmp_path / "s")], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "needs ray" in done.stderr and "pip install 'batchsim[sweep]'" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("extra, message", [
    (["--address", "127.0.0.1:6379"], "--address is the Ray cluster's"),
    (["--backend", "ray", "--workers", "2"], "--workers sets local processes"),
])
def test_backend_options_that_do_not_go_together(tmp_path, capsys, extra, message):
    out = tmp_path / "s"
    assert main(["sweep", "--policy", "continuous", "--request-rate", "4", *extra,
                 "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_ray_tasks_get_absolute_input_paths(tmp_path, monkeypatch):
    """A worker on another node does not share the driver's working directory; shipped
    profile names stay names, resolved where the task runs."""
    (tmp_path / "p.json").write_text("{}")
    (tmp_path / "t.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    spec = absolute_paths(RunSpec("hybrid", profile="p.json", trace="t.jsonl",
                                  cpu_profile="qwen2.5-0.5b-cpu"))
    assert spec.profile == str(tmp_path.resolve() / "p.json")
    assert spec.trace == str(tmp_path.resolve() / "t.jsonl")
    assert spec.cpu_profile == "qwen2.5-0.5b-cpu"
    assert absolute_paths(RunSpec("continuous", profile="missing.json")).profile == "missing.json"


def _free_loopback_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_address_is_one_line_and_exit_2_in_bounded_time(tmp_path):
    """ray.init alone would retry a dead GCS address without end; the sweep says so at once."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'batchsim[sweep]')")
    port = _free_loopback_port()
    out = tmp_path / "s"
    argv = [sys.executable, "-m", "batchsim", "sweep", "--policy", "continuous",
            "--request-rate", "4", "--num-requests", "5", "--backend", "ray",
            "--address", f"127.0.0.1:{port}", "--out", str(out)]
    child = subprocess.Popen(argv, cwd=tmp_path, env={**os.environ, **LOOPBACK_ONLY},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        _, err = child.communicate(timeout=90)  # importing ray is most of it
    except subprocess.TimeoutExpired:
        pytest.fail("an unreachable --address hung the sweep")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot reach Ray at --address 127.0.0.1:{port}" in err
    assert not out.exists()


def test_reachability_check_accepts_a_listener_and_refuses_bad_addresses(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}", timeout_s=5)
        check_reachable(f"ray://127.0.0.1:{port}", timeout_s=5)
    for address in (None, "auto", "local"):  # not network addresses: left to Ray
        check_reachable(address, timeout_s=5)
    with pytest.raises(UsageError, match="not a Ray address"):
        check_reachable("127.0.0.1", timeout_s=5)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_free_loopback_port()}")
    with pytest.raises(UsageError,
                       match=re.escape("cannot reach Ray at RAY_ADDRESS=127.0.0.1:")):
        check_reachable(None, timeout_s=5)


def test_python_api_takes_the_backend_and_address():
    import batchsim

    with pytest.raises(ValueError, match="backend must be one of local, ray"):
        batchsim.sweep("continuous", request_rates=[4], backend="dask")
    with pytest.raises(ValueError, match="give it with backend='ray'"):
        batchsim.sweep("continuous", request_rates=[4], address="127.0.0.1:6379")
    pytest.importorskip("ray", reason="ray is not installed (pip install 'batchsim[sweep]')")
    port = _free_loopback_port()
    with pytest.raises(UsageError,
                       match=re.escape(f"cannot reach Ray at --address 127.0.0.1:{port}")):
        batchsim.sweep("continuous", request_rates=[4], workload={"num_requests": 4},
                       backend="ray", address=f"127.0.0.1:{port}")
