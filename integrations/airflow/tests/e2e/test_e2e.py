"""tether under a real Airflow 3 (SQLite, dag.test() in-process).

Every case runs in three modes -- BashOperator, TetherOperator (sync) and
TetherOperator(deferrable=True) with the trigger run inline by dag.test() --
and asserts on what Airflow itself recorded: task-instance states, try
numbers, task_instance_history and XComs. DAGs: dags/tether_e2e.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import AIRFLOW_HOME, REPO, TETHER_BIN, DagResult, Runner, read_run

MODES = ["bash", "sync", "deferrable"]


def check_outcome(r: DagResult, outcome: str) -> dict:
    """work succeeded with `outcome`, and downstream received exactly that JSON."""
    assert r.ti_state("work") == "success", r.describe()
    assert r.ti_state("downstream") == "success", r.describe()
    assert r.state == "success", r.describe()
    got = r.outcome("work")
    assert got["outcome"] == outcome, got
    assert got["final"] is True and got["proceed"] is True, got
    assert r.xcom["downstream:return_value"] == {"received": got}
    return got


def check_xcom_type(r: DagResult, mode: str) -> None:
    raw = r.xcom["work:return_value"]
    # BashOperator pushes the last stdout line (a str); the operator the parsed dict.
    assert isinstance(raw, str if mode == "bash" else dict), type(raw)


def expected_key(r: DagResult) -> str:
    return f"airflow/{r.dag_id}/{r.run_id}/work"


# --------------------------------------------------------------------------- the cases
@pytest.mark.parametrize("mode", MODES)
def test_success(runner: Runner, mode: str):
    """The downstream task runs and receives the outcome JSON through XCom."""
    r = runner.run(f"e2e_{mode}_success")
    got = check_outcome(r, "succeeded")
    check_xcom_type(r, mode)
    assert got["results"] == {"rows": "42"}
    assert got["backend"] == "local" and got["job_id"] == "1" and got["attempts"] == 1
    assert got["key"] == expected_key(r), "the key is airflow/<dag>/<run>/<task> in every mode"
    assert r.try_number("work") == 1
    if mode != "bash":
        # the operator's XCom "tether_show": `tether show --json` essentials
        show = r.xcom.get("work:tether_show")
        if isinstance(show, str):
            show = json.loads(show)
        assert show and show["run_id"] == got["run_id"] and show["state"] == "succeeded", r.describe()
        assert [a["job_id"] for a in show["attempts"]] == ["1"] and show["attempts"][0]["exit_code"] == 0, show
        assert any("exit file of attempt 1: exit 0" in e for e in show["decision"]["evidence"]), show
        # the "tether run" extra link, as Airflow stored it for the UI
        link = r.xcom.get("work:_link_TetherRunLink")
        assert link == f"http://tether-monitor.example:9464/run/{got['run_id']}", r.describe()


@pytest.mark.parametrize("mode", MODES)
def test_timeout_with_enough_checkpoint_is_partial(runner: Runner, mode: str):
    """Walltime hit, 90 % checkpointed after the warning, 80 % required: partial, downstream runs."""
    r = runner.run(f"e2e_{mode}_partial")
    got = check_outcome(r, "partial")
    assert got["scheduler_state"] == "TIMEOUT" and got["fraction"] == 0.9, got
    assert "proceeding: checkpoint at 90%" in got["reason"], got


@pytest.mark.parametrize("mode", MODES)
def test_timeout_skip_skips_task_and_downstream(runner: Runner, mode: str):
    """on_timeout = "skip" without enough work: exit 99, work and downstream SKIPPED."""
    r = runner.run(f"e2e_{mode}_skip")
    assert r.ti_state("work") == "skipped", r.describe()
    assert r.ti_state("downstream") == "skipped", r.describe()
    assert r.state == "success", r.describe()
    assert "work:return_value" not in r.xcom
    runs = r.tether("list", "--json").json()
    assert [x["state"] for x in runs] == ["skipped"], runs


@pytest.mark.parametrize("mode", MODES)
def test_failure_fails_task_and_downstream_upstream_failed(runner: Runner, mode: str):
    r = runner.run(f"e2e_{mode}_fail")
    assert r.ti_state("work") == "failed", r.describe()
    assert r.ti_state("downstream") == "upstream_failed", r.describe()
    assert r.state == "failed", r.describe()
    assert "work:return_value" not in r.xcom
    assert r.try_number("work") == 1
    st = r.tether("list", "--json").json()
    assert [x["state"] for x in st] == ["failed"], st


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_bad_input_fails_without_retry(runner: Runner, mode: str):
    """Exit 2 (here an invalid --set) is AirflowFailException: FAILED at try 1 despite retries=1."""
    r = runner.run(f"e2e_{mode}_badinput")
    assert r.ti_state("work") == "failed", r.describe()
    assert r.try_number("work") == 1, r.describe()
    assert r.history == [], "no second try"
    assert r.ti_state("downstream") == "upstream_failed"
    assert not (r.state_home / "tether" / "local" / "seq").exists(), "nothing was submitted"


@pytest.mark.parametrize("mode", ["bash", "sync"])
def test_mapped_instances_get_their_own_jobs(runner: Runner, mode: str):
    r = runner.run(f"e2e_{mode}_mapped")
    assert r.ti_state("work[0]") == "success" and r.ti_state("work[1]") == "success", r.describe()
    runs = r.tether("list", "--json").json()
    assert sorted(x["key"] for x in runs) == [f"{expected_key(r)}/0", f"{expected_key(r)}/1"], runs
    assert sorted(x["job_id"] for x in runs) == ["1", "2"], runs


@pytest.mark.parametrize("mode", MODES)
def test_array_elements_and_mapped_downstream(runner: Runner, mode: str):
    """An array Task fed by an upstream list is ONE scheduler array; the
    operator's XCom "elements" feeds a downstream task mapped over them."""
    r = runner.run(f"e2e_{mode}_array")
    assert r.ti_state("work") == "success", r.describe()
    runs = r.tether("list", "--json").json()
    assert len(runs) == 1 and runs[0]["job_id"].endswith("(array of 3)"), runs
    if mode == "bash":
        got = r.outcome("work")
        assert got["counts"] == {"succeeded": 3}, got
        assert [e["results"]["sq"] for e in got["elements"]] == ["4", "9", "16"], got
        return
    got = r.xcom["work:outcome"]
    assert got["outcome"] == "succeeded" and got["counts"] == {"succeeded": 3}, got
    els = r.xcom["work:return_value"]
    assert [e["params"] for e in els] == [{"n": 2}, {"n": 3}, {"n": 4}], els
    for i, sq in enumerate(["4", "9", "16"]):
        assert r.ti_state(f"each[{i}]") == "success", r.describe()
        assert r.xcom[f"each[{i}]:return_value"] == {"index": i, "sq": sq, "outcome": "succeeded"}


# --------------------------------------------------------------------------- retry + kill
def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                # the ppid is the 2nd field after the parenthesised comm
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _tether_run_pids(task_file: str) -> list[int]:
    """PIDs of `tether run ... TASK_FILE` processes that this test process started."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv if a]
        if (
            len(argv) >= 3
            and os.path.basename(argv[0]) == "tether"
            and argv[1] == "run"
            and argv[-1] == task_file
            and _descends_from(int(d.name), os.getpid())
        ):
            pids.append(int(d.name))
    return pids


class KillTetherRunOnce(threading.Thread):
    """Once the Task has started (its `started` marker exists), SIGKILL the
    first try's `tether run` process, found by the per-test task file path.
    The job itself keeps running."""

    def __init__(self, task_dir: Path):
        super().__init__(daemon=True, name="kill-tether-run")
        self.task_file = str(task_dir / "retry.toml")
        self.marker = task_dir / "started"
        self.killed: list[int] = []
        self.job_finished_at_kill: bool | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.marker.exists():
                pids = _tether_run_pids(self.task_file)
                if pids:
                    self.job_finished_at_kill = (self.marker.parent / "finished").exists()
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    self.killed = pids
                    return
            time.sleep(0.02)


STATUS_KILLER_SHIM = """#!/bin/bash
# e2e shim in front of tether: the first try's `tether watch` (the trigger's
# shared watch process) answers every run with an infrastructure error once
# the Task has started, as a watch whose state directory went away would;
# the trigger tolerates max_status_errors=1 of them, then gives up and the
# try fails while the job keeps running. The retry's watch is the real one.
dir=%(dir)s
if [ "$1" = watch ] && [ ! -e "$dir/status-kills" ]; then
  echo 1 > "$dir/status-kills"
  while read -r verb run; do
    [ -n "$run" ] || run=$verb
    [ "$verb" = forget ] && continue
    until [ -e "$dir/started" ]; do sleep 0.05; done
    n=$(cat "$dir/status-errors" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$dir/status-errors"
    printf '{"v":1,"run":"%%s","event":"error","exit_code":3,"error":"injected: state directory unusable"}\\n' "$run"
  done
  exit 0
fi
exec %(real)s "$@"
"""


@pytest.mark.parametrize("mode", MODES)
def test_retry_after_killed_try_reattaches_to_the_same_job(runner: Runner, mode: str, tmp_path: Path):
    """retries=1; the first try dies by SIGKILL while the job runs; the retry
    reattaches: exactly one scheduler job for the key."""
    killer = None
    if mode == "deferrable":
        # No process waits on the worker while deferred: the trigger's
        # watch process fails instead (1 error tolerated, the 2nd fails the try).
        shim_dir = tmp_path / "shim"
        shim_dir.mkdir()
        shim = shim_dir / "tether"
        shim.write_text(STATUS_KILLER_SHIM % {"dir": runner.task_dir, "real": TETHER_BIN})
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
        runner.monkeypatch.setenv("PATH", f"{shim_dir}{os.pathsep}{os.environ['PATH']}")
    else:
        killer = KillTetherRunOnce(runner.task_dir)
        killer.start()
    try:
        r = runner.run(f"e2e_{mode}_retry")
    finally:
        if killer:
            killer.stop.set()
            killer.join()

    if killer:
        assert killer.killed, "the first try's `tether run` was never found and killed"
        assert killer.job_finished_at_kill is False, "killed while the job was running"
    else:
        assert int((runner.task_dir / "status-errors").read_text().strip()) >= 2

    got = check_outcome(r, "succeeded")
    assert r.try_number("work") == 2, r.describe()
    assert ("work", 1, "failed") in r.history, r.describe()
    assert got["results"] == {"survived": "yes"}
    # exactly one scheduler job, one tether attempt, for this key
    assert got["job_id"] == "1" and got["attempts"] == 1, got
    runs = r.tether("list", "--json").json()
    assert len(runs) == 1, runs
    assert runs[0]["key"] == expected_key(r) and runs[0]["job_id"] == "1" and runs[0]["attempts"] == 1, runs
    assert runs[0]["run_id"] == got["run_id"]
    assert (r.state_home / "tether" / "local" / "seq").read_text().strip() == "1"
    # ... and the retry found that job still running: try 2 started before the Task finished
    try2_start = datetime.fromisoformat(r.tis["work"]["start_date"]).replace(tzinfo=timezone.utc).timestamp()
    assert try2_start < (r.task_dir / "finished").stat().st_mtime, r.describe()


# --------------------------------------------------------------------------- the README's example DAGs
@pytest.mark.parametrize(
    "dag_id,mode",
    [
        ("tether_bash_example", "bash"),
        ("tether_provider_example", "sync"),
        ("tether_provider_deferrable_example", "deferred"),
    ],
)
def test_example_dags(runner: Runner, dag_id: str, mode: str):
    def fast_polls(dag):
        analysis = dag.get_task("analysis")
        if getattr(analysis, "deferrable", False):
            analysis.poll_interval = 0.2  # the example polls every 60 s

    r = runner.run(dag_id, prepare=fast_polls)
    assert r.ti_state("analysis") == "success", r.describe()
    assert r.ti_state("report") == "success", r.describe()
    got = r.outcome("analysis")
    assert got["outcome"] == "succeeded" and got["results"]["chunks"] == "5", got
    report = r.xcom["report:return_value"]
    assert report["outcome"] == "succeeded"
    if mode != "bash":
        assert report == {"outcome": "succeeded", "mode": "fast" if mode == "sync" else "deferred"}
    assert got["site"] == "local"


def test_example_dag_through_the_airflow_cli(runner: Runner):
    """`airflow dags test` itself (the CLI the issue names), not dag.test():
    the BashOperator example runs and hands its JSON line to `report`."""
    import json
    import sqlite3
    import subprocess
    import sys

    p = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", "tether_bash_example"],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    con = sqlite3.connect(AIRFLOW_HOME / "airflow.db")
    try:
        (run_id,) = con.execute(
            "SELECT run_id FROM dag_run WHERE dag_id='tether_bash_example' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    got = read_run("tether_bash_example", run_id)
    assert got["state"] == "success", got
    assert got["tis"]["analysis"]["state"] == "success" and got["tis"]["report"]["state"] == "success", got
    outcome = json.loads(got["xcom"]["analysis:return_value"])
    assert outcome["outcome"] == "succeeded" and outcome["results"]["chunks"] == "5", outcome


# --------------------------------------------------------------------------- provider registration
def test_provider_is_registered_with_airflow():
    """The installed wheel's entry point is found by Airflow's ProvidersManager."""
    from airflow.providers_manager import ProvidersManager

    import tether_provider

    providers = ProvidersManager().providers
    assert "airflow-provider-tether" in providers, sorted(providers)
    info = providers["airflow-provider-tether"]
    assert info.version == tether_provider.__version__
    assert "tether_provider.triggers.tether" in info.data["triggers"][0]["python-modules"]


# --------------------------------------------------------------------------- Slurm 22.05
SLURM_SITE = REPO / "site-configs" / "testcluster" / "slurm-22.05-sbatch.toml"
SHARED = Path("/tmp/tether-testcluster/shared")


def _install_shared_tether() -> Path:
    """Copy bin/tether to the cluster's shared dir (atomically: jobs may be running it)."""
    dst = SHARED / "bin" / "tether"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not (dst.exists() and dst.read_bytes() == TETHER_BIN.read_bytes()):
        tmp = dst.with_name(f".tether.{uuid.uuid4().hex}")
        shutil.copy2(TETHER_BIN, tmp)
        tmp.chmod(0o755)
        os.replace(tmp, dst)
    return dst


@pytest.mark.parametrize("mode", ["bash", "deferrable"])
def test_success_on_slurm_22_05(runner: Runner, mode: str):
    """The success case against the real Slurm 22.05 test cluster (sbatch backend)."""
    if not SLURM_SITE.exists():
        msg = f"{SLURM_SITE} missing: start the test cluster with `make testcluster`"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true: not skipping)")
        pytest.skip(msg)
    tether_bin = _install_shared_tether()
    work = SHARED / "airflow-e2e" / uuid.uuid4().hex
    work.mkdir(parents=True)
    try:
        runner.use_task_dir(work)
        runner.monkeypatch.setenv("PATH", f"{tether_bin.parent}{os.pathsep}{os.environ['PATH']}")
        runner.monkeypatch.setenv("TETHER_SITE", str(SLURM_SITE))
        r = runner.run(f"e2e_{mode}_success")
        got = check_outcome(r, "succeeded")
        assert got["backend"] == "sbatch" and got["site"] == "slurm-22.05-sbatch", got
        assert got["job_id"].isdigit() and got["cause"] == "completed", got
        assert got["results"] == {"rows": "42"}
        assert got["run_dir"].startswith(str(SHARED)), got
    finally:
        shutil.rmtree(work, ignore_errors=True)
