"""Ray beyond one node: a real two-node Ray cluster on this machine (a head and a worker node,
each started with ``ray start`` and its own CPU, its own ports and temp dir), a sweep submitted to
it with ``--address``, the worker node killed mid-sweep (its raylet, its agents and the Ray worker
process training a run on it: what a machine that dies takes with it), the worker node started
again, and the same command relaunched: every run complete and intact, nothing duplicated.

docs/ray.md describes the same set-up on several machines; this test is its executable version
(on one machine, so the shared ``--out-dir`` is simply a local folder).

Nothing here touches another Ray instance: both nodes have their own temp dir, explicit ports,
their own authentication token, and are stopped by killing the processes this test started
(``ray stop`` would stop every Ray instance of this user on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mechgrok.store import Run
from mechgrok.sweep import RUNS_DIR, expand, load_sweep, load_sweep_spec
from tests.conftest import ROOT, assert_one_line_error, checkpoint_file_ids, tiny_sweep_toml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)"),
]

EPOCHS = 250
EVERY = 25
N_RUNS = 4
SWEEP = tiny_sweep_toml(name="cluster", epochs=EPOCHS, every=EVERY,
                        train_extra="batch_size = 8", sweep_extra=f"seeds = {N_RUNS // 2}",
                        grid='"train.weight_decay" = [0.3, 1.0]')


# --------------------------------------------------------------------------------------------
# Processes, from /proc
# --------------------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, …), None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _ppid(pid: int) -> int | None:
    st = _stat(pid)
    return int(st[1]) if st else None


def _alive(pid: int, started: str | None = None) -> bool:
    """Running (not a zombie), and the same process when ``started`` (its start time) is given,
    not a later one that reuses the pid."""
    st = _stat(pid)
    return bool(st) and st[0] not in ("Z", "X") and (started is None or st[19] == started)


def _descendants(*roots: int) -> list[int]:
    """Every live process under ``roots`` (Ray workers are children of their node's raylet but
    in sessions of their own, so a process group would miss them)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (pp := _ppid(int(d))) is not None:
            children.setdefault(pp, []).append(int(d))
    out, todo = [], list(roots)
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(root: int) -> None:
    """SIGKILL ``root`` and everything under it until all of it is gone, what a machine that
    loses power does to its processes. Every process seen is killed again each round (one
    orphaned by its dying parent included) and known by its start time, so a pid reused by an
    unrelated process is never hit."""
    seen: dict[int, str] = {}
    for _ in range(100):
        alive_seen = [p for p, started in seen.items() if _alive(p, started)]
        for p in [root, *_descendants(root, *alive_seen)]:
            if p not in seen and (st := _stat(p)):
                seen[p] = st[19]
        live = [p for p, started in seen.items() if _alive(p, started)]
        if not live:
            return
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.2)
    raise AssertionError(f"processes {live} survived SIGKILL")


def _with_env(entry: bytes) -> list[int]:
    """The processes whose environment holds ``entry`` (``NAME=value``): with a value unique to
    this test, exactly its own processes, Ray workers included, whatever their parent now."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            with contextlib.suppress(OSError):
                if entry in Path(f"/proc/{d}/environ").read_bytes().split(b"\0"):
                    out.append(int(d))
    return out


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _poll(what: str, check, timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := check()):
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# --------------------------------------------------------------------------------------------
# A Ray cluster of `ray start` nodes on this machine
# --------------------------------------------------------------------------------------------
def _ray_cli() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.is_file() else (shutil.which("ray") or "ray")


NODES_SCRIPT = """
import json, sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print("NODES", json.dumps([{"alive": n["Alive"], "cpus": n["Resources"].get("CPU", 0),
                            "raylet": n["RayletSocketName"]} for n in ray.nodes()]), flush=True)
"""


class Cluster:
    """A head node and worker nodes, each a ``ray start --block`` process of this test's."""

    def __init__(self, root: Path) -> None:
        self.root = root  # short: Ray's unix sockets live under it (a 107-byte path limit)
        token = self.token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        # every node and every driver of the cluster: the same token (Ray's token
        # authentication, enabled explicitly: a node joining with `ray start --address` does
        # not turn it on by itself)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                   RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
        self.env = env
        self.address = ""
        self.nodes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *, head: bool = False, num_cpus: int = 1) -> subprocess.Popen:
        ports = _free_ports(8)
        args = [_ray_cli(), "start", "--block", "--num-cpus", str(num_cpus),
                "--temp-dir", str(self.root / name), "--disable-usage-stats",
                "--object-store-memory", str(80 * 1024 * 1024),
                # two nodes on one host: none of the per-node default ports may be shared
                "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
                "--dashboard-agent-listen-port", str(ports[2]),
                "--dashboard-agent-grpc-port", str(ports[3]),
                "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5])]
        if head:
            args += ["--head", "--port", str(ports[6]), "--include-dashboard=false",
                     "--dashboard-port", str(ports[7])]
            self.address = f"127.0.0.1:{ports[6]}"
        else:
            assert self.address, "start the head first"
            args += ["--address", self.address]
            head_proc = self.nodes["head"]

            def gcs_up() -> bool:
                if head_proc.poll() is not None:
                    raise AssertionError(f"the ray head node exited:\n{self.log('head')}")
                return _port_open(self.address)

            _poll("the head node's GCS port", gcs_up, 120)
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.nodes[name] = proc
        return proc

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.root / f"{name}.log").read_text()[-3000:]
        return ""

    def node_table(self) -> list[dict[str, Any]]:
        proc = subprocess.run([sys.executable, "-c", NODES_SCRIPT, self.address], env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # Ray prints the cluster's notices (a node marked dead…) on a driver's stdout too
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("NODES "))
        return json.loads(line.removeprefix("NODES "))

    def alive_nodes(self) -> dict[str, float]:
        """name → CPUs of each alive node, named by the temp dir its raylet lives in."""
        out = {}
        for n in self.node_table():
            if n["alive"]:
                name = Path(n["raylet"]).relative_to(self.root).parts[0]
                out[name] = n["cpus"]
        return out

    def wait_for(self, names: set[str], timeout: float = 180) -> dict[str, float]:
        def check() -> dict[str, float] | None:
            for name in names:
                if self.nodes[name].poll() is not None:
                    raise AssertionError(f"ray node {name} exited:\n{self.log(name)}")
            got = self.alive_nodes()
            return got if set(got) == names else None

        return _poll(f"the cluster to report nodes {sorted(names)}", check, timeout, every=1)

    def raylet_pid(self, name: str) -> int:
        for pid in _descendants(self.nodes[name].pid):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if (Path(argv[0].decode()).name == "raylet"
                        and f"--temp_dir={self.root / name}".encode() in argv):
                    return pid
        raise AssertionError(f"no raylet under ray node {name}:\n{self.log(name)}")

    def kill(self, name: str) -> None:
        proc = self.nodes[name]
        if proc.returncode is not None:  # reaped already: its pid may be another process's now
            return
        _kill_tree(proc.pid)  # while unreaped, the pid is still this node's
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)

    def stop(self) -> None:
        """Workers first, the head last, then anything left that runs with this cluster's token
        (a Ray worker orphaned by its raylet): only the processes this test started."""
        for name in reversed(list(self.nodes)):
            self.kill(name)
        mine = f"RAY_AUTH_TOKEN_PATH={self.token}".encode()
        for _ in range(20):
            if not (left := [p for p in _with_env(mine) if _alive(p)]):
                break
            for p in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.2)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    pytest.importorskip("ray")
    root = Path(tempfile.mkdtemp(prefix="mgray-", dir="/tmp"))
    c = Cluster(root)
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------
def _sweep_cmd(f: Path, address: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mechgrok", "sweep", str(f), "--backend", "ray", "--address",
            address, "--out-dir", str(out), "--no-report", *extra]


def _training_on(node_pids: set[int], runs_dir: Path) -> tuple[Path, int] | None:
    """A run training in a process of ``node_pids`` with two checkpoints written."""
    for d in sorted(runs_dir.glob("*")) if runs_dir.is_dir() else []:
        try:
            man = json.loads((d / "manifest.json").read_text())
            pid = int((d / "run.lock").read_text().strip())
        except (OSError, ValueError):
            continue
        if (man.get("status") == "running" and len(man.get("checkpoints", [])) >= 2
                and pid in node_pids):
            return d, pid
    return None


def assert_sweep_intact(sweep_dir: Path, run_ids: list[str]) -> None:
    """Every run done, once: final status, every checkpoint's SHA-256 verified and loaded,
    metrics without a repeated epoch up to the end, the analysis written."""
    data = load_sweep(sweep_dir)
    assert sorted(r["run_id"] for r in data["runs"]) == sorted(run_ids)
    assert sorted(p.name for p in (sweep_dir / RUNS_DIR).iterdir()) == sorted(run_ids)
    for r in data["runs"]:
        assert r["state"] == "done", r
        run = Run(r["path"])
        assert run.status == "finished", (r["run_id"], run.status)
        cks = run.checkpoints()
        epochs = [c.epoch for c in cks]
        assert epochs == sorted(set(epochs)) and epochs[-1] == EPOCHS, epochs
        for ck in cks:
            run.load_model(ck)  # reads the file, checks its size and SHA-256
        m = run.metrics()
        assert [x["epoch"] for x in m] == sorted({x["epoch"] for x in m})
        assert m[-1]["epoch"] == EPOCHS
        assert (Path(r["path"]) / "analysis" / "measures.jsonl").is_file()


@pytest.mark.parametrize("retries", [2, 0])
def test_sweep_on_a_two_node_cluster_survives_losing_a_node(cluster: Cluster, tmp_path: Path,
                                                            retries: int) -> None:
    """``--retries 2`` (the default): the lost task is retried on the head node and the sweep
    ends complete. ``--retries 0``: the lost run is reported in one line and the relaunch
    resumes it. Either way, the killed run keeps the checkpoints it had written."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    cluster.start("head", head=True)
    cluster.start("worker")
    assert cluster.wait_for({"head", "worker"}) == {"head": 1.0, "worker": 1.0}
    timings["cluster up"] = time.monotonic() - t0

    f = tmp_path / "cluster.toml"
    f.write_text(SWEEP)
    run_ids = [pt.run_id for pt in expand(load_sweep_spec(f))]
    assert len(run_ids) == N_RUNS
    out = tmp_path / "shared"  # the --out-dir every node sees at the same path
    runs_dir = out / "cluster" / RUNS_DIR
    cmd = _sweep_cmd(f, cluster.address, out, "--retries", str(retries))
    with open(tmp_path / "first.out", "w") as so, open(tmp_path / "first.err", "w") as se:
        sweep = subprocess.Popen(cmd, cwd=ROOT, env=cluster.env, stdout=so, stderr=se,
                                 start_new_session=True)
    try:
        # a run training on the worker node, checkpoints written: kill the node under it
        worker = cluster.nodes["worker"]
        raylet = cluster.raylet_pid("worker")

        def victim() -> tuple[Path, int] | None:
            if sweep.poll() is not None:
                raise AssertionError("the sweep ended before a run trained on the worker node: "
                                     + (tmp_path / "first.err").read_text()[-3000:])
            return _training_on(set(_descendants(worker.pid)), runs_dir)

        victim_dir, victim_pid = _poll("a run training on the worker node", victim, 240)
        assert _ppid(victim_pid) == raylet  # a Ray worker process of the worker node's raylet
        kept = checkpoint_file_ids(victim_dir)
        timings["worker node killed"] = time.monotonic() - t0
        cluster.kill("worker")  # returns once every process of the node is gone
        assert not _alive(raylet) and not _alive(victim_pid)
        assert Run(victim_dir).status == "running"  # interrupted mid-run

        # the cluster notices, and the driver does not hang on the lost task
        _poll("the worker node reported dead",
              lambda: set(cluster.alive_nodes()) == {"head"}, 180, every=1)
        sweep.wait(timeout=400)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    timings["first sweep ended"] = time.monotonic() - t0
    first = subprocess.CompletedProcess(cmd, sweep.returncode,
                                        (tmp_path / "first.out").read_text(),
                                        (tmp_path / "first.err").read_text())
    states = {r["run_id"]: r for r in load_sweep(out / "cluster")["runs"]}
    if retries:  # retried on the head node, resumed from its last checkpoint
        assert first.returncode == 0, first.stderr[-3000:]
        assert f"{N_RUNS} runs: {N_RUNS} trained now, 0 already done, 0 failed" in first.stdout
        assert_sweep_intact(out / "cluster", run_ids)
    else:  # reported, in one line, and left for the relaunch
        assert_one_line_error(first, "runs failed", "relaunch the same command")
        assert states[victim_dir.name]["state"] == "failed"
        assert "node" in states[victim_dir.name]["error"], states[victim_dir.name]
        assert Run(victim_dir).status == "running"
    n_failed = sum(r["state"] != "done" for r in states.values())
    assert checkpoint_file_ids(victim_dir).items() >= kept.items()

    # the worker node comes back (a restarted machine rejoining), and the same command again
    cluster.start("worker2")
    assert cluster.wait_for({"head", "worker2"}) == {"head": 1.0, "worker2": 1.0}
    again = subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True,
                           timeout=400)
    timings["relaunch ended"] = time.monotonic() - t0
    assert again.returncode == 0, again.stderr[-3000:]
    assert (f"{N_RUNS} runs: {n_failed} trained now, {N_RUNS - n_failed} already done, "
            f"0 failed") in again.stdout, again.stdout
    assert_sweep_intact(out / "cluster", run_ids)
    # the killed run was resumed from its checkpoints, not trained again from scratch
    assert checkpoint_file_ids(victim_dir).items() >= kept.items()
    print(f"--retries {retries}: seconds since start:",
          {k: round(v, 1) for k, v in timings.items()})
