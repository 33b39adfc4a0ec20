"""`gdtrain sweep --backend ray` against a real Ray cluster on this machine: a head and a
second raylet started with `ray start` (token authentication, loopback addresses only),
a sweep across both, and a node killed mid-trial whose trial Ray retries elsewhere: it
resumes from its checkpoint and ends bit-identical to an uninterrupted run.

Skipped when the ray extra is absent (`make test` installs it). The cluster is shared by
the module's tests and stopped by process id at the end: only the processes this module
started are touched.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

if importlib.util.find_spec("ray") is None:  # found, not imported: each sweep imports it afresh
    pytest.skip("the ray extra is not installed: pip install 'gdtrain[ray]' (make test installs it)",
                allow_module_level=True)

from resume_helpers import assert_same_state, checkpoint_arrays  # noqa: E402
from test_sweep import LR, REPO, SLOW, reference, write_sweep  # noqa: E402

from gdtrain.run import checkpoint  # noqa: E402
from gdtrain.sweep.spec import load_sweep  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
HEAD_IP, SECOND_IP, DOOMED_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"  # all loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every process, from /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry.name)] = (ppid, cmdline)
    return out


def _with_descendants(roots: set[int]) -> set[int]:
    table = _processes()
    found = set(roots)
    while True:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found and pid not in found}
        if not more:
            return found
        found |= more


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Cluster:
    """A Ray head and extra raylets on this machine, in a temp dir of their own."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="gdr-", dir="/tmp")  # short: Ray's socket paths
        self.port = _free_port()
        self.address = f"{HEAD_IP}:{self.port}"
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    # a lost node is noticed in about two seconds, not the default thirty
                    "RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
                    "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}
        self.env.pop("RAY_ADDRESS", None)

    def _ray(self, *args: str) -> None:
        done = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self) -> None:
        self._ray("start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={self.port}", "--num-cpus=1",
                  "--include-dashboard=false", f"--temp-dir={self.temp_dir}", "--disable-usage-stats")
        self.add_node(SECOND_IP)

    def add_node(self, ip: str) -> int:
        self._ray("start", f"--address={self.address}", "--num-cpus=1", f"--node-ip-address={ip}")
        return self.raylet(ip)

    def raylet(self, ip: str) -> int:
        for pid, (_, cmd) in _processes().items():
            if "raylet/raylet " in cmd and self.temp_dir in cmd and f"--node_ip_address={ip} " in cmd:
                return pid
        raise AssertionError(f"no raylet for {ip}")

    def kill_node(self, ip: str) -> None:
        """The node is lost: its raylet and everything under it, SIGKILL."""
        _kill(_with_descendants({self.raylet(ip)}))

    def stop(self) -> None:
        mine = {pid for pid, (_, cmd) in _processes().items() if self.temp_dir in cmd and pid != os.getpid()}
        _kill(_with_descendants(mine))


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _sweep_cli(path: Path, cluster: Cluster, *args: str, cwd: Path) -> subprocess.Popen:
    env = {**cluster.env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "gdtrain", "sweep", str(path), "--backend", "ray",
                             "--address", cluster.address, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_sweep_runs_across_both_nodes_quietly_and_equals_in_process_runs(cluster, tmp_path):
    # trials of seconds, not milliseconds: Ray hands a finished worker the next queued task, so
    # 400 steps of a linear model (about 50 ms) all ran on the head while the second node's
    # worker was still starting (seen on a quiet machine)
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.05, 0.1]}}, "seeds": [0, 1]}, base=SLOW)
    proc = _sweep_cli(path, cluster, "--json", cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["backend"] == "ray" and result["workers"] == 2
    assert [t["status"] for t in result["trials"]] == ["finished"] * 4
    assert {t["node"] for t in result["trials"]} == {HEAD_IP, SECOND_IP}
    # quiet: nothing but the one line per trial a non-terminal gets
    assert all(line.startswith("learning_rate-") for line in err.splitlines()), err
    for t in load_sweep(path).trials:
        straight = reference(t.config, tmp_path / "straight")
        assert_same_state(checkpoint_arrays(t.run_dir), checkpoint_arrays(straight), t.name)


def test_a_node_killed_mid_trial_its_trial_is_retried_resumes_and_ends_bit_identical(cluster, tmp_path):
    raylet = cluster.add_node(DOOMED_IP)
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.02, 0.05, 0.1]}}}, base=SLOW)
    directory = tmp_path / "runs" / "sw"
    proc = _sweep_cli(path, cluster, "--json", cwd=tmp_path)
    deadline = time.monotonic() + 300
    doomed = None
    while doomed is None:  # the trial running under the doomed node's raylet, once it has saved
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        table = _processes()
        for status_file in directory.glob("*/status.json"):
            try:
                pid = json.loads(status_file.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            run = status_file.parent
            if table.get(pid, (None,))[0] == raylet and _newest_checkpoint(run) >= SLOW["train"]["log_every"]:
                doomed = run
        time.sleep(0.02)
    saved = _newest_checkpoint(doomed)
    before = (doomed / "metrics.jsonl").read_text().splitlines()
    cluster.kill_node(DOOMED_IP)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    trials = {t["trial"]: t for t in json.loads(out)["trials"]}
    assert all(t["status"] == "finished" for t in trials.values()), trials
    assert trials[doomed.name]["node"] in (HEAD_IP, SECOND_IP)  # finished on a surviving node
    # resumed, not started over: what it logged up to its checkpoint is still there, byte for byte
    after = (doomed / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in before if _step(line) is not None and _step(line) <= saved]
    assert kept and after[: len(kept)] == kept
    for t in load_sweep(path).trials:
        straight = reference(t.config, tmp_path / "straight")
        assert_same_state(checkpoint_arrays(t.run_dir), checkpoint_arrays(straight), t.name)


def _newest_checkpoint(run: Path) -> int:
    found = checkpoint.list_checkpoints(run / "checkpoints")
    return checkpoint.step_of(found[-1]) if found else 0


def _step(line: str) -> int | None:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError):  # a line being written when it was read
        return None
