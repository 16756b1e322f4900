"""The README's recipe for a Ray cluster inside a SLURM allocation, run on this machine: a head
(`ray start --head`) and a second node joining it (`ray start --address`), one CPU each, as `srun` would start
them on two nodes, with Ray's token authentication on (its default for `ray start --head`); then a stage run
with RAY_ADDRESS set puts its two workers on the two nodes and writes the local engine's bytes."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="compute.engine: ray needs the cluster extra (pip install -e '.[cluster]')")

from test_engine import RAY_BUILD, outputs  # noqa: E402
from test_storage_stores import build, data_params, source, small_shards  # noqa: E402,F401

RAY = str(Path(sys.executable).with_name("ray"))


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid`: what `ray start --block` started (GCS, raylet, workers, some in
    their own process groups) dies with it, leaving nothing for the next test."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # the fields after "(comm)": state, ppid, pgrp, session
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def alive_nodes(address: str, env: dict) -> int:
    probe = "import ray; ray.init(address=%r, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    proc = subprocess.run([sys.executable, "-c", probe % address], env=env, capture_output=True, text=True,
                          timeout=120)
    return int(proc.stdout.split()[-1]) if proc.returncode == 0 and proc.stdout.split() else 0


@pytest.fixture
def two_node_ray(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    # every node and the driver: the token `ray start --head` writes to ~/.ray/auth_token (a shared home on a
    # SLURM cluster; else pass RAY_AUTH_TOKEN)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    started = []

    def start(*args, log):
        started.append(subprocess.Popen([RAY, "start", *args, "--num-cpus=1", "--block"], env=env,
                                        start_new_session=True, stdout=open(tmp_path / log, "wb"),
                                        stderr=subprocess.STDOUT))

    try:
        start("--head", f"--port={port}", "--include-dashboard=false", log="head.log")
        deadline = time.monotonic() + 180
        while alive_nodes(address, env) < 1:
            assert time.monotonic() < deadline and started[0].poll() is None, (tmp_path / "head.log").read_text()
            time.sleep(2)
        start(f"--address={address}", log="node.log")
        while alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline and started[1].poll() is None, (tmp_path / "node.log").read_text()
            time.sleep(2)
        yield address, env
    finally:
        for proc in started:
            kill_session(proc.pid)
            proc.wait()
        current = Path("/tmp/ray/ray_current_cluster")  # what `ray stop` would clear: the dead head's address
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def test_a_stage_runs_on_a_two_node_ray_cluster_at_RAY_ADDRESS(two_node_ray, source, small_shards, tmp_path):
    address, env = two_node_ray
    build(data_params(source), tmp_path / "local")
    proc = subprocess.run([sys.executable, "-c", RAY_BUILD, str(source), str(tmp_path / "ray"), "2"],
                          env={**env, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # one worker per node: each node has the one CPU a worker asks for
    assert f"ray: 2 workers on {address} (2 CPUs, 0 GPUs)" in proc.stderr
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
