"""Real-Airflow e2e fixtures: one throwaway AIRFLOW_HOME (SQLite) per pytest
process, DAGs run in-process with ``dag.test()``, results read back from
Airflow's own database.

Needs: the venv from scripts/airflow-env.sh with airflow-provider-tether
installed (scripts/test-airflow.sh does it) and a tether binary
($TETHER_BIN, else <repo>/bin/tether from `make build`).

The environment must be set before anything imports airflow, so it is done
at import time of this conftest (pytest imports it before the test modules).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
E2E_DAGS = HERE / "dags"
TASKS = HERE / "tasks"
EXAMPLES = REPO / "examples" / "airflow"

TETHER_BIN = Path(os.environ.get("TETHER_BIN") or REPO / "bin" / "tether").resolve()

# --------------------------------------------------------------------------- environment
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="tether-airflow-e2e-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
# dag.test() syncs the configured dags folder into the DB and can only run
# DAGs from it: link the e2e DAGs and the README's example DAGs into one.
for src in [*E2E_DAGS.glob("*.py"), *EXAMPLES.glob("*.py")]:
    (DAGS_FOLDER / src.name).symlink_to(src)

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
        "PYTHONWARNINGS": "ignore",
        # the operator's "tether run" extra link points here
        "TETHER_MONITOR_URL": "http://tether-monitor.example:9464",
        "PATH": f"{TETHER_BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
)
for var in ("TETHER_SITE", "TETHER_STATE_DIR", "TETHER_EXAMPLE_SITE"):
    os.environ.pop(var, None)


# Rough cost of each test in seconds (mostly Task sleeps), to split the tests
# into balanced shards: TETHER_E2E_SHARD=i/n runs shard i of n (0-based);
# scripts/test-airflow.sh runs the shards as parallel pytest processes.
COSTS = {
    "test_timeout_with_enough_checkpoint_is_partial": 3.5,
    "test_timeout_skip_skips_task_and_downstream": 3.5,
    "test_retry_after_killed_try_reattaches_to_the_same_job": 3.7,
    "test_example_dags": 2.0,
    "test_example_dag_through_the_airflow_cli": 8.0,
    "test_success_on_slurm_22_05": 2.0,
    "test_success": 0.8,
    "test_mapped_instances_get_their_own_jobs": 1.0,
    "test_failure_fails_task_and_downstream_upstream_failed": 0.5,
}


# The tests of a real deployment (test_triggerer.py) share one, started
# once per module (~15 s): they go to one shard together.
DEPLOYMENT_MODULE = "test_triggerer.py"
DEPLOYMENT_COST = 60.0


def _cost(item) -> float:
    return COSTS.get(getattr(item, "originalname", item.name), 0.2)


def pytest_collection_modifyitems(config, items):
    shard = os.environ.get("TETHER_E2E_SHARD")
    if not shard:
        return
    i, n = (int(x) for x in shard.split("/"))
    # units of work: each test alone, the deployment module's tests as one
    units: list[list[int]] = []
    deployment: list[int] = []
    for k, it in enumerate(items):
        if it.path.name == DEPLOYMENT_MODULE:
            deployment.append(k)
        else:
            units.append([k])
    if deployment:
        units.append(deployment)

    def cost(u: list[int]) -> float:
        return DEPLOYMENT_COST if u is deployment else sum(_cost(items[k]) for k in u)

    loads = [0.0] * n
    mine = set()
    # longest first, each to the least-loaded shard (deterministic: same order everywhere)
    for u in sorted(units, key=lambda u: (-cost(u), u[0])):
        s = loads.index(min(loads))
        loads[s] += cost(u)
        if s == i:
            mine.update(u)
    keep = [it for k, it in enumerate(items) if k in mine]
    drop = [it for k, it in enumerate(items) if k not in mine]
    items[:] = keep
    if drop:
        config.hook.pytest_deselected(items=drop)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("TETHER_E2E_KEEP"):
        print(f"\nkept AIRFLOW_HOME={AIRFLOW_HOME}")
    else:
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


# --------------------------------------------------------------------------- reading back
def _plain(v: Any) -> Any:
    return getattr(v, "value", v)


@dataclass
class DagResult:
    """A finished DagRun as Airflow recorded it (read with sqlite3)."""

    dag_id: str
    run_id: str
    state: str
    tis: dict[str, dict[str, Any]]
    xcom: dict[str, Any]
    history: list[tuple[str, int, str]]
    seconds: float
    task_dir: Path
    state_home: Path

    def ti_state(self, task_id: str) -> str | None:
        return self.tis.get(task_id, {}).get("state")

    def try_number(self, task_id: str) -> int | None:
        return self.tis.get(task_id, {}).get("try_number")

    def outcome(self, task_id: str = "work") -> dict[str, Any] | None:
        """The return_value XCom of a tether task as a dict (BashOperator's is a str)."""
        raw = self.xcom.get(f"{task_id}:return_value")
        return json.loads(raw) if isinstance(raw, str) else raw

    def tether(self, *args: str) -> TetherResult:
        return tether(*args, state_home=self.state_home)

    def describe(self) -> str:
        return json.dumps(
            {"dag": self.dag_id, "state": self.state, "tis": self.tis, "xcom": self.xcom, "history": self.history},
            default=str,
        )


def read_run(dag_id: str, run_id: str) -> dict[str, Any]:
    con = sqlite3.connect(AIRFLOW_HOME / "airflow.db")
    try:
        (state,) = con.execute("SELECT state FROM dag_run WHERE dag_id=? AND run_id=?", (dag_id, run_id)).fetchone()
        # mapped task instances are keyed "task_id[map_index]"
        tis = {
            (t if mi < 0 else f"{t}[{mi}]"): {"state": s, "try_number": n, "start_date": sd}
            for t, mi, s, n, sd in con.execute(
                "SELECT task_id, map_index, state, try_number, start_date FROM task_instance"
                " WHERE dag_id=? AND run_id=?",
                (dag_id, run_id),
            )
        }
        # xcom.value is a JSON column: decode once, and only TEXT (numbers come back as numbers)
        # keyed "task_id:key", mapped instances' "task_id[map_index]:key"
        xcom = {
            f"{t if mi < 0 else f'{t}[{mi}]'}:{k}": json.loads(v) if isinstance(v, str) else v
            for t, mi, k, v in con.execute(
                "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id=? AND run_id=?", (dag_id, run_id)
            )
        }
        history = sorted(
            con.execute(
                "SELECT task_id, try_number, state FROM task_instance_history WHERE dag_id=? AND run_id=?",
                (dag_id, run_id),
            ).fetchall()
        )
        return {"state": state, "tis": tis, "xcom": xcom, "history": [tuple(h) for h in history]}
    finally:
        con.close()


# --------------------------------------------------------------------------- tether CLI
@dataclass
class TetherResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout.strip().splitlines()[-1])


def tether(*args: str, state_home: Path) -> TetherResult:
    env = dict(os.environ, XDG_STATE_HOME=str(state_home))
    p = subprocess.run([str(TETHER_BIN), *args], env=env, capture_output=True, text=True, check=False)
    return TetherResult(p.returncode, p.stdout, p.stderr)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def airflow_db():
    """Migrate the throwaway SQLite DB once per session (~4 s), or copy a migrated one."""
    if not TETHER_BIN.is_file():
        pytest.exit(f"tether binary not found at {TETHER_BIN}: run `make build` or set TETHER_BIN", 2)
    t = time.monotonic()
    db = AIRFLOW_HOME / "airflow.db"
    template = os.environ.get("TETHER_E2E_DB_TEMPLATE")
    if template and Path(template).is_file():
        # an already migrated, still empty DB (scripts/test-airflow.sh makes one
        # while the unit tests run): saves one migration per shard
        shutil.copyfile(template, db)
    else:
        p = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], capture_output=True, text=True
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return time.monotonic() - t


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag


class Runner:
    """Runs one DAG per test with dag.test(), a per-test XDG_STATE_HOME and
    per-test copies of the Task files; returns a DagResult."""

    def __init__(self, bag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.bag = bag
        self.task_dir = tmp_path / "tasks"
        shutil.copytree(TASKS, self.task_dir)
        self.state_home = tmp_path / "state"
        self.state_home.mkdir()
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("XDG_STATE_HOME", str(self.state_home))

    def use_task_dir(self, path: Path) -> None:
        """Run the Task files from another folder (e.g. the Slurm cluster's shared dir)."""
        shutil.copytree(TASKS, path, dirs_exist_ok=True)
        self.task_dir = path

    def run(self, dag_id: str, *, prepare=None) -> DagResult:
        dag = self.bag.get_dag(dag_id)
        assert dag is not None, f"no DAG {dag_id}"
        if prepare:
            prepare(dag)
        t = time.monotonic()
        dr = dag.test(run_conf={"task_dir": str(self.task_dir)})
        seconds = time.monotonic() - t
        got = read_run(dag_id, dr.run_id)
        assert got["state"] == _plain(dr.state)
        return DagResult(
            dag_id=dag_id,
            run_id=dr.run_id,
            seconds=seconds,
            task_dir=self.task_dir,
            state_home=self.state_home,
            **got,
        )


@pytest.fixture
def runner(dagbag, tmp_path, monkeypatch) -> Runner:
    return Runner(dagbag, tmp_path, monkeypatch)
