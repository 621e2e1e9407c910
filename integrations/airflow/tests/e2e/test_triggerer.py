"""Deferrable tasks on a real Airflow deployment (tests/deployment.py):
api-server, scheduler, dag-processor and triggerer as their own processes.

dag.test() (test_e2e.py) runs a deferred task's trigger inline; here a real
`airflow triggerer` runs it: the deferrable cases again, a triggerer killed
mid-deferral and started again, and a user's "mark failed" reaching the
trigger's on_kill.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import E2E_DAGS, TASKS, TETHER_BIN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deployment import Deployment, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    d = Deployment(
        tmp_path_factory.mktemp("deployment"),
        E2E_DAGS.glob("*.py"),
        TETHER_BIN,
        db_template=os.environ.get("TETHER_E2E_DB_TEMPLATE"),
    )
    try:
        d.start()
        d.wait_parsed("e2e_deferrable_hold", "e2e_deferrable_hold_cancel", *(f"e2e_deferrable_{c}" for c in CASES))
        yield d
    finally:
        d.stop()


# the deferrable cases of test_e2e.py, here on the real triggerer: the
# task's state, downstream's, and the run's tether outcome (None: none)
CASES = {
    "success": ("success", "success", "succeeded"),
    "partial": ("success", "success", "partial"),
    "skip": ("skipped", "skipped", "skipped"),
    "fail": ("failed", "upstream_failed", "failed"),
    "badinput": ("failed", "upstream_failed", None),
}


def test_deferrable_cases_on_a_real_triggerer(deployment: Deployment, tmp_path: Path):
    """success, partial, skip, failure and bad input as deferred tasks whose
    triggers a real triggerer runs (all at once): the same task states,
    XComs and tether outcomes as with dag.test()'s inline trigger."""
    d = deployment
    runs = {}
    for case in CASES:
        task_dir = _tasks(tmp_path / case)
        runs[case] = d.trigger(f"e2e_deferrable_{case}", {"task_dir": str(task_dir)})

    def ended():
        return all(d.run_state(f"e2e_deferrable_{c}", r) in ("success", "failed") for c, r in runs.items())

    wait_for(ended, 240, "the five DAG runs end", every=0.5,
             why=lambda: "\n".join(f"{c}: {d.tis(f'e2e_deferrable_{c}', r)}" for c, r in runs.items()))
    listed = {r["key"]: r for r in _runs(d)}
    for case, (work, downstream, outcome) in CASES.items():
        dag, run_id = f"e2e_deferrable_{case}", runs[case]
        tis = d.tis(dag, run_id)
        assert (tis["work"]["state"], tis["downstream"]["state"]) == (work, downstream), (case, tis)
        assert tis["work"]["try_number"] == 1, (case, tis)
        got = listed.get(f"airflow/{dag}/{run_id}/work")
        if outcome is None:
            assert got is None, (case, got)  # refused before anything was submitted
            continue
        assert got and got["state"] == outcome and got["attempts"] == 1, (case, got)
        if work == "success":
            out = d.xcom(dag, run_id, "work")
            assert out["outcome"] == outcome and d.xcom(dag, run_id, "downstream") == {"received": out}, (case, out)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _tasks(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    shutil.copytree(TASKS, d)
    return d


def _deferred(d: Deployment, dag_id: str, run_id: str, task_dir: Path):
    def ready():
        ti = d.tis(dag_id, run_id).get("work", {})
        return (task_dir / "held").exists() and ti.get("state") == "deferred"

    wait_for(ready, 180, f"{dag_id}: the task deferred and its Task started",
             why=lambda: f"{d.tis(dag_id, run_id)}\n{d.tail('scheduler')}\n{d.tail('triggerer')}")
    # and a triggerer runs its trigger, which has heard from tether watch
    wait_for(lambda: '): running"' in d.trigger_log(dag_id, run_id), 60, f"{dag_id}: the trigger runs",
             why=lambda: d.trigger_log(dag_id, run_id) + d.tail("triggerer"))


def _watchers(d: Deployment) -> list[int]:
    return [p for p in d.group("triggerer") if _cmdline(p)[1:3] == ["watch", "--stdin"]]


def _runs(d: Deployment) -> list[dict]:
    p = d.tether("list", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_triggerer_killed_mid_deferral_the_next_one_decides(deployment: Deployment, tmp_path: Path):
    """The triggerer (and its tether watch) dies while the task is deferred;
    the job ends while no triggerer runs; a new triggerer takes the trigger
    over, its tether watch decides the run, and the task succeeds in its
    first try, with one tether run and one scheduler job for its key."""
    d, dag = deployment, "e2e_deferrable_hold"
    task_dir = _tasks(tmp_path)
    run_id = d.trigger(dag, {"task_dir": str(task_dir)})
    _deferred(d, dag, run_id, task_dir)
    watch = wait_for(lambda: _watchers(d), 60, "the triggerer's tether watch runs", why=lambda: d.tail("triggerer"))
    assert len(watch) == 1, [_cmdline(p) for p in watch]
    d.kill("triggerer")
    killed_at = datetime.now(timezone.utc)
    # nothing of the dead triggerer lives on: its tether watch ends with it
    wait_for(lambda: not _alive(watch[0]), 15, "tether watch ends with its triggerer")
    (task_dir / "release").touch()  # the job ends while no triggerer watches
    wait_for(lambda: [r for r in _runs(d) if r["name"] == "e2e-hold" and r["state"] == "ended"], 60,
             "the job ended, undecided", why=lambda: str(_runs(d)))
    assert d.tis(dag, run_id)["work"]["state"] == "deferred"
    d.start("triggerer")
    state = wait_for(lambda: d.run_state(dag, run_id) in ("success", "failed") and d.run_state(dag, run_id), 180,
                     "the DAG run ends", why=lambda: f"{d.tis(dag, run_id)}\n{d.tail('triggerer')}")
    ti = d.tis(dag, run_id)["work"]
    assert state == "success" and ti["state"] == "success" and ti["try_number"] == 1, (state, ti)
    out = d.xcom(dag, run_id, "work")
    assert out["outcome"] == "succeeded" and out["results"] == {"released": "yes"}, out
    # one tether run, one attempt, one scheduler job for the task's key
    mine = [r for r in _runs(d) if r["run_id"] == out["run_id"]]
    assert len(mine) == 1 and mine[0]["attempts"] == 1 and mine[0]["job_id"], mine
    assert [r["run_id"] for r in _runs(d) if r.get("key") == mine[0]["key"]] == [out["run_id"]], _runs(d)
    show = d.tether("show", out["run_id"], "--json")
    assert show.returncode == 0, show.stderr
    decided = json.loads(show.stdout.strip().splitlines()[-1])["outcome"]
    # decided after the first triggerer died: by the second one's tether watch
    assert datetime.fromisoformat(decided["decided_at"].replace("Z", "+00:00")) > killed_at, decided


def test_mark_failed_deferred_task_cancels_the_job(deployment: Deployment, tmp_path: Path):
    """cancel_on_kill on a deferred task (Airflow 3.3's trigger on_kill): a
    user marks the task failed while it waits; the triggerer cancels the
    trigger, whose on_kill runs tether cancel: the job ends and the run is
    cancelled."""
    d, dag = deployment, "e2e_deferrable_hold_cancel"
    task_dir = _tasks(tmp_path)
    run_id = d.trigger(dag, {"task_dir": str(task_dir)})
    _deferred(d, dag, run_id, task_dir)
    d.api("PATCH", f"/dags/{dag}/dagRuns/{run_id}/taskInstances/work", {"new_state": "failed"})

    def cancelled():
        return [r for r in _runs(d) if r["name"] == "e2e-hold" and r["state"] == "cancelled"]

    got = wait_for(cancelled, 90, "the run is cancelled", why=lambda: f"{_runs(d)}\n{d.tail('triggerer')}")
    assert len(got) == 1, got
    assert d.tis(dag, run_id)["work"]["state"] == "failed"
    show = json.loads(d.tether("show", got[0]["run_id"], "--json").stdout.strip().splitlines()[-1])
    assert show["outcome"]["cause"] == "cancelled" and len(show["attempts"]) == 1, show
