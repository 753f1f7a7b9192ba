"""Scale-out: the stage lock, two drivers on one store, the Ray executor (one local instance, and a
two-node cluster started with `ray start` on loopback with a worker killed mid-stage).

Every grid here is configs/smoke.yaml cut to one starting point and one augmentation size (12
stages), run with one CPU thread per stage: CPU float results depend on the thread count (parallel
reductions add in another order), and a Ray task gets its num_cpus (1) as threads, so the local
reference runs with OMP_NUM_THREADS=1 too. Ray's processes are started by the tests and stopped
by them (by process group), each bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from blindspot.grid.store import read_status, stage_lock

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
SMALL = ["--set", "start_sizes=[60]", "--set", "augment.sizes=[6]"]
COLS = ["start_size", "source", "aug_size", "seed", "eval_set", "slice", "correct", "n"]
RUN_TIMEOUT_S = 900


def _env() -> dict:
    root = Path(os.environ.get("BLINDSPOT_DATA", REPO.parent / "shared" / "data"))
    if not (root / "mnli-subset").is_dir():
        pytest.skip(f"real data not found at {root} (set BLINDSPOT_DATA)")
    return {**os.environ, "BLINDSPOT_DATA": str(root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _blindspot(*args: str) -> list[str]:
    return [sys.executable, "-m", "blindspot.cli", "run", str(SMOKE), *SMALL, *args]


def _table(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results" / "results.csv")[COLS].sort_values(COLS).reset_index(drop=True)


def _events(store: Path, event: str) -> dict[str, int]:
    """stage dirname -> how many `event` lines its status log holds."""
    return {d.name: sum(e["event"] == event for e in read_status(d)) for d in store.iterdir() if d.is_dir()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The small grid with the local executor, one thread: the table every other run must equal."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.run(_blindspot("--out", str(out)), env=_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# --- the lock ---------------------------------------------------------------------------------

def test_a_lock_held_by_a_killed_process_is_released(tmp_path):
    from filelock import Timeout

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from blindspot.grid.store import stage_lock; "
        "lock = stage_lock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(600)"),
        str(tmp_path / "stage")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):
            stage_lock(tmp_path / "stage").acquire(timeout=0.2)  # held while the process lives
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock = stage_lock(tmp_path / "stage")
    lock.acquire(timeout=5)  # no manual cleanup: the OS dropped the dead process's lock
    lock.release()


# --- two drivers on one store -----------------------------------------------------------------

@pytest.mark.slow
def test_two_runs_on_one_store_run_each_stage_once(reference, tmp_path):
    store, env = tmp_path / "store", _env()
    procs = []
    for name in ("a", "b"):
        procs.append(subprocess.Popen(_blindspot("--out", str(tmp_path / name), "--store", str(store)), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(1.0)
    for p in procs:
        _, err = p.communicate(timeout=RUN_TIMEOUT_S)
        assert p.returncode == 0, err[-3000:]
    assert set(_events(store, "running").values()) == {1}  # every stage ran exactly once
    assert set(_events(store, "success").values()) == {1}
    drivers = {e["pid"] for d in store.iterdir() for e in read_status(d) if e["event"] == "running"}
    assert len(drivers) == 2  # and both drivers did some of the work
    pd.testing.assert_frame_equal(_table(tmp_path / "a"), _table(reference))
    pd.testing.assert_frame_equal(_table(tmp_path / "b"), _table(reference))


# --- Ray ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ray_local_instance_gives_the_local_table(reference, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from blindspot.grid import run

    for k, v in _env().items():
        monkeypatch.setenv(k, v)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        run(SMOKE, out=tmp_path / "ray", overrides=[SMALL[1], SMALL[3]], display="off", executor="ray")
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(_table(tmp_path / "ray"), _table(reference))
    timing = [json.loads(p.read_text()) for p in (tmp_path / "ray" / "stages").glob("*/timing.json")]
    assert timing and {t["threads"] for t in timing} == {1}
    assert {e["event"] for d in (tmp_path / "ray" / "stages").iterdir() for e in read_status(d)} == \
        {"waiting", "running", "success"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group, so that the test can stop all it started."""
    ray_bin = Path(sys.executable).with_name("ray")
    return subprocess.Popen([str(ray_bin), "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _forget_cluster(port: int) -> None:
    """`ray start --head` leaves its address in /tmp/ray/ray_current_cluster, where a later bare
    ray.init() would look for it: remove it once this test's cluster is gone (if it is still ours)."""
    current = Path("/tmp/ray/ray_current_cluster")
    if current.is_file() and current.read_text().strip().endswith(f":{port}"):
        current.unlink(missing_ok=True)


def _wait_for_head(port: int, env: dict, timeout_s: float = 180) -> None:
    """Until `ray status` reaches the head (a loaded machine takes tens of seconds to start it)."""
    ray_bin = Path(sys.executable).with_name("ray")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if subprocess.run([str(ray_bin), "status", f"--address=127.0.0.1:{port}"], env=env, capture_output=True,
                          timeout=60).returncode == 0:
            return
        time.sleep(2)
    pytest.fail(f"the Ray head on port {port} did not come up in {timeout_s:.0f} s")


def _stop(node: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(node.pid, sig)
            node.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_two_node_ray_cluster_survives_a_killed_worker(reference, tmp_path):
    pytest.importorskip("ray")
    # Ray's token authentication with a token of the test's own, given to the head, the worker and
    # the driver alike (as on a real cluster), so nothing depends on ~/.ray/auth_token
    env = {**_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = _free_port()
    head = _ray_node(["--head", "--node-ip-address", "127.0.0.1", f"--port={port}", "--num-cpus", "1",
                      "--include-dashboard", "false"], env, tmp_path / "head.log")
    nodes = [head]
    try:
        _wait_for_head(port, env)
        nodes.append(_ray_node([f"--address=127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1"],
                               env, tmp_path / "worker.log"))
        out = tmp_path / "cluster"
        driver = subprocess.Popen(_blindspot("--out", str(out), "--executor", "ray", "--ray-address",
                                             f"127.0.0.1:{port}"), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        killed = _kill_generator_training(out / "stages", driver)
        stdout, stderr = driver.communicate(timeout=RUN_TIMEOUT_S)
        assert driver.returncode == 0, stderr[-3000:] + (tmp_path / "head.log").read_text()[-2000:]
    finally:
        for node in reversed(nodes):
            _stop(node)
        _forget_cluster(port)
    assert stderr == ""  # nothing of Ray's on the screen
    events = read_status(killed)
    assert [e["event"] for e in events].count("running") == 2  # killed, then run again by Ray
    assert events[-1]["event"] == "success"
    assert "resuming from checkpoint" in (killed / "stage.log").read_text()
    pd.testing.assert_frame_equal(_table(out), _table(reference))
    hosts = {e["pid"] for d in (out / "stages").iterdir() for e in read_status(d) if e["event"] == "running"}
    assert len(hosts) >= 2  # the work was spread over worker processes


def _kill_generator_training(store: Path, driver: subprocess.Popen, timeout_s: float = 600) -> Path:
    """SIGKILL the Ray worker training the generator once it has written a checkpoint; its directory."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and driver.poll() is None:
        for d in store.glob("generator-*"):
            running = [e for e in read_status(d) if e["event"] == "running"]
            if running and any((d / "checkpoints").glob("step-*")) and not (d / "DONE").exists():
                os.kill(running[-1]["pid"], signal.SIGKILL)  # the worker process that runs the stage
                return d
        time.sleep(0.05)
    pytest.fail("the generator's training was not seen running with a checkpoint")


# --- a group of stages trained together (Plan.groups) -----------------------------------------

class _Display:
    """RunDisplay's events, recorded."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, st) -> None:
        self.events.append(("started", st.label))

    def done(self, st, wall_s, out) -> None:
        self.events.append(("done", st.label))

    def done_elsewhere(self, st) -> None:
        self.events.append(("elsewhere", st.label))

    def failed_stage(self, st, reason, skipped=False) -> None:
        self.events.append(("skipped" if skipped else "failed", st.label))


def _fake_stages(monkeypatch, calls: list):
    """`augment` as a stage kind that writes out/x.txt; its run_group records which members it got."""
    import types

    from blindspot import stages
    from blindspot.errors import DataError
    from blindspot.stages.common import StageModel

    class Spec(StageModel):
        x: int = 0
        fail: bool = False

    def run(spec, inputs, out, runtime):
        if spec.fail:
            raise DataError("bad data")
        calls.append(("alone", spec.x))
        (out / "x.txt").write_text(str(spec.x))

    def run_group(specs, inputs, outs, runtime):
        calls.append(("group", sorted(s.x for s in specs)))
        for s, out in zip(specs, outs):
            (out / "x.txt").write_text(str(s.x))
        return ["bad data" if s.fail else None for s in specs]

    module = types.SimpleNamespace(Spec=Spec, run=run, run_group=run_group)
    monkeypatch.setitem(stages.STAGES, "augment", module)
    monkeypatch.setitem(stages.STAGES, "prepare", module)


def test_run_group_holds_each_members_lock_and_writes_its_records(tmp_path, monkeypatch):
    from blindspot.grid.artifacts import StageSpec
    from blindspot.grid.store import run_group

    calls: list = []
    _fake_stages(monkeypatch, calls)
    members = [StageSpec("augment", {"x": x, "fail": x == 3}, {}, label=f"aug {x}") for x in (1, 2, 3, 4)]
    store = tmp_path / "store"
    other = stage_lock(members[3].path(store))  # another run holds member 4
    other.acquire()
    out = run_group(members, store, "r1", wait=False)
    assert calls == [("group", [1, 2, 3])]
    assert [out[m.dirname].status for m in members] == ["done", "done", "failed", "locked"]
    for m in members[:2]:
        d = m.path(store)
        assert (d / "DONE").exists() and (d / "stage.json").exists()
        assert json.loads((d / "timing.json").read_text())["grouped_with"] == 2
        running = [e for e in read_status(d) if e["event"] == "running"]
        assert len(running) == 1 and running[0]["group"] == [x.dirname for x in members[:3]]
    assert not (members[2].path(store) / "DONE").exists()
    assert [e["event"] for e in read_status(members[2].path(store))][-1] == "failed"
    other.release()
    again = run_group([members[0], members[3]], store, "r2", wait=False)  # one left to run: as a stage alone
    assert calls[-1] == ("alone", 4) and again[members[0].dirname].status == "cached"
    assert again[members[3].dirname].status == "done"


def test_local_executor_runs_a_group_as_one_job_and_skips_a_member_whose_input_failed(tmp_path, monkeypatch):
    from blindspot.grid.artifacts import StageSpec
    from blindspot.grid.executors.local import run_local

    calls: list = []
    _fake_stages(monkeypatch, calls)
    bad = StageSpec("prepare", {"x": 0, "fail": True}, {}, label="bad input")
    good = StageSpec("prepare", {"x": 9}, {}, label="good input")
    members = [StageSpec("augment", {"x": x}, {"data": bad if x == 3 else good}, label=f"aug {x}") for x in (1, 2, 3)]
    shown = _Display()
    failed = run_local([good, bad, *members], tmp_path, shown, groups=[members])
    assert calls == [("alone", 9), ("group", [1, 2])]
    assert failed == {bad.dirname: "bad data", members[2].dirname: "skipped: needs bad input, which failed"}
    assert ("done", "aug 1") in shown.events and ("done", "aug 2") in shown.events
    assert all(m.done(tmp_path) for m in members[:2])
