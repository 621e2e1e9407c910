#!/usr/bin/env python3
"""Working example: drive the pinned Airflow 3.x venv end to end and read results back.

Not a test suite yet -- a probe that shows (and checks) exactly how to:
  * init a throwaway SQLite metadata DB          (`airflow db migrate`)
  * run a DAG in-process without scheduler/triggerer (`airflow dags test <dag_id>`
    or, faster for many DAGs, `dag.test()` in one Python process)
  * read task-instance states and XCom values back from Airflow, three ways:
      1. plain sqlite3 on $AIRFLOW_HOME/airflow.db (no Airflow import needed)
      2. Airflow's ORM (airflow.models.*) inside the venv
      3. the CLI: `airflow tasks states-for-dag-run <dag> <run_id> -o json`
         (states only; there is no XCom CLI in 3.x)

Run it with the venv's interpreter:

    VENV=$(scripts/airflow-env.sh)
    "$VENV/bin/python" integrations/airflow/tests/e2e_probe.py            # CLI mode (~50 s)
    "$VENV/bin/python" integrations/airflow/tests/e2e_probe.py --inprocess  # one process (~20 s)

Options: --keep keeps the temporary AIRFLOW_HOME (path printed), -v prints
Airflow's output. Exit status 0 iff every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAGS_DIR = HERE / "dags"
VENV_BIN = Path(sys.executable).parent
AIRFLOW = VENV_BIN / "airflow"

DAG_IDS = ["tether_probe", "tether_probe_retry", "tether_probe_defer", "tether_probe_fail"]


def airflow_env(home: Path) -> dict[str, str]:
    """Environment for a fast, isolated Airflow: must be set BEFORE importing airflow."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        # Otherwise every `dags test` also parses/syncs ~80 example DAGs.
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        # Keep Python warnings (graphviz, httpx deprecation) off stdout so that
        # `-o json` CLI output stays parseable.
        "PYTHONWARNINGS": "ignore",
    }


# --------------------------------------------------------------------------- checks
class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: object = "") -> None:
        if ok:
            self.passed += 1
            print(f"  ok    {name}")
        else:
            self.failed += 1
            print(f"  FAIL  {name}  {detail!r}")


# --------------------------------------------------------------------------- readers
def read_sqlite(db: Path, dag_id: str) -> dict:
    """Reader 1: stdlib sqlite3 only.

    XCom `value` is a JSON column: json.loads it ONCE. SQLite's NUMERIC affinity
    stores bare JSON numbers (e.g. 42) as INTEGER/REAL, so only decode str values.
    """
    con = sqlite3.connect(db)
    try:
        run_id, run_state = con.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id=? ORDER BY run_after DESC LIMIT 1",
            (dag_id,),
        ).fetchone()
        tis = {
            task_id: {"state": state, "try_number": try_number}
            for task_id, state, try_number in con.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id=? AND run_id=?",
                (dag_id, run_id),
            )
        }
        xcom = {
            f"{task_id}:{key}": json.loads(value) if isinstance(value, str) else value
            for task_id, key, value in con.execute(
                "SELECT task_id, key, value FROM xcom WHERE dag_id=? AND run_id=? AND map_index=-1",
                (dag_id, run_id),
            )
        }
        # Earlier tries of retried tasks move to task_instance_history (new TI id per try).
        history = sorted(
            (task_id, try_number, state)
            for task_id, try_number, state in con.execute(
                "SELECT task_id, try_number, state FROM task_instance_history WHERE dag_id=? AND run_id=?",
                (dag_id, run_id),
            )
        )
        return {"run_id": run_id, "state": run_state, "tis": tis, "xcom": xcom, "history": history}
    finally:
        con.close()


def _plain(state: object) -> str | None:
    """ORM state columns come back as str or as a str-Enum depending on the path."""
    return getattr(state, "value", state)  # type: ignore[return-value]


def read_orm(dag_id: str) -> dict:
    """Reader 2: Airflow's own ORM (import only after AIRFLOW_HOME etc. are in os.environ)."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dr = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(1)
        ).one()
        tis = {
            ti.task_id: {"state": _plain(ti.state), "try_number": ti.try_number}
            for ti in session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == dr.run_id)
            )
        }
        # Use row.value (already JSON-decoded by SQLAlchemy). Do NOT use
        # XComModel.deserialize_value(row): it json.loads a second time, so a
        # BashOperator's '{"a":1}' *string* comes back as a dict.
        xcom = {
            f"{x.task_id}:{x.key}": x.value
            for x in session.scalars(XComModel.get_many(run_id=dr.run_id, dag_ids=dag_id, map_indexes=-1))
        }
        history = sorted(
            (h.task_id, h.try_number, _plain(h.state))
            for h in session.scalars(
                select(TaskInstanceHistory).where(
                    TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == dr.run_id
                )
            )
        )
        return {
            "run_id": dr.run_id,
            "state": _plain(dr.state),
            "tis": tis,
            "xcom": xcom,
            "history": history,
        }


def read_cli_states(dag_id: str, run_id: str, env: dict[str, str]) -> dict[str, str]:
    """Reader 3: `airflow tasks states-for-dag-run ... -o json` (states only, no try_number)."""
    out = subprocess.run(
        [str(AIRFLOW), "tasks", "states-for-dag-run", dag_id, run_id, "-o", "json"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    # Log lines may still precede the JSON on stdout: take the JSON line.
    line = next(l for l in out.splitlines() if l.startswith("["))
    return {row["task_id"]: row["state"] for row in json.loads(line)}


# --------------------------------------------------------------------------- runners
def run_cli(args: list[str], env: dict[str, str], verbose: bool) -> tuple[int, str, float]:
    t = time.monotonic()
    p = subprocess.run([str(AIRFLOW), *args], env=env, capture_output=True, text=True)
    dt = time.monotonic() - t
    out = p.stdout + p.stderr
    if verbose:
        print(out)
    return p.returncode, out, dt


def run_inprocess(dag_ids: list[str]) -> dict[str, tuple[str, float]]:
    """All DAGs via dag.test() in this process: pays Airflow import + execution-API
    start-up (~3-4 s) once instead of per DAG."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert not bag.import_errors, bag.import_errors
    res = {}
    for dag_id in dag_ids:
        t = time.monotonic()
        dr = bag.get_dag(dag_id).test()
        res[dag_id] = (_plain(dr.state), time.monotonic() - t)
    return res


# --------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inprocess", action="store_true", help="run DAGs via dag.test() in this process")
    ap.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME")
    ap.add_argument("-v", "--verbose", action="store_true", help="print Airflow's output")
    opts = ap.parse_args()

    if not AIRFLOW.exists():
        sys.exit(f"{AIRFLOW} not found: run this with the venv python from scripts/airflow-env.sh")

    home = Path(tempfile.mkdtemp(prefix="tether-airflow-home-"))
    env_overrides = airflow_env(home)
    os.environ.update(env_overrides)  # before any airflow import in this process
    env = dict(os.environ)
    c = Checks()
    timings: dict[str, float] = {}
    outputs: dict[str, str] = {}
    rcs: dict[str, int] = {}
    print(f"AIRFLOW_HOME={home}  mode={'inprocess' if opts.inprocess else 'cli'}")

    try:
        rc, out, timings["db_migrate"] = run_cli(["db", "migrate"], env, opts.verbose)
        c.check("airflow db migrate exits 0", rc == 0, out[-2000:])

        if opts.inprocess:
            t = time.monotonic()
            res = run_inprocess(DAG_IDS)
            timings["inprocess_total"] = time.monotonic() - t
            for dag_id, (state, dt) in res.items():
                timings[f"dag.test {dag_id}"] = dt
        else:
            for dag_id in DAG_IDS:
                rcs[dag_id], outputs[dag_id], timings[f"dags test {dag_id}"] = run_cli(
                    ["dags", "test", dag_id], env, opts.verbose
                )

        db = home / "airflow.db"
        runs = {d: read_sqlite(db, d) for d in DAG_IDS}

        # --- tether_probe: Bash JSON -> XCom -> @task; skip_on_exit_code=99
        r = runs["tether_probe"]
        if not opts.inprocess:
            c.check("dags test tether_probe exits 0", rcs["tether_probe"] == 0, outputs["tether_probe"][-2000:])
        c.check("tether_probe run success", r["state"] == "success", r["state"])
        c.check("emit_json success", r["tis"].get("emit_json", {}).get("state") == "success", r["tis"])
        c.check("read_json success", r["tis"].get("read_json", {}).get("state") == "success", r["tis"])
        c.check("skip_99 skipped (exit 99)", r["tis"].get("skip_99", {}).get("state") == "skipped", r["tis"])
        raw = r["xcom"].get("emit_json:return_value")
        c.check("BashOperator XCom return_value is the last stdout line, as a str", isinstance(raw, str), raw)
        emitted = json.loads(raw) if isinstance(raw, str) else {}
        c.check(
            "AIRFLOW_CTX_DAG_ID/DAG_RUN_ID/TASK_ID/TRY_NUMBER seen by the bash subprocess",
            emitted.get("dag_id") == "tether_probe"
            and emitted.get("run_id") == r["run_id"]
            and emitted.get("task_id") == "emit_json"
            and emitted.get("try") == "1",
            emitted,
        )
        got = r["xcom"].get("read_json:return_value")
        c.check("@task return_value (dict) read back", isinstance(got, dict) and got.get("seen_by") == "read_json", got)
        c.check(
            "@task -> dict also pushes one XCom per key (multiple_outputs inferred from annotation)",
            r["xcom"].get("read_json:answer") == 42,
            sorted(r["xcom"]),
        )
        if not opts.inprocess:
            out = outputs["tether_probe"]
            c.check("ctx vars visible in dags test stdout", "ctx DAG_ID=tether_probe" in out and "ctx TASK_ID=emit_json" in out)

        # --- retries under dags test
        r = runs["tether_probe_retry"]
        c.check("retry run success (dags test honours retries + retry_delay)", r["state"] == "success", r)
        c.check("flaky try_number == 2", r["tis"].get("flaky", {}).get("try_number") == 2, r["tis"])
        c.check("try 1 recorded in task_instance_history as failed", ("flaky", 1, "failed") in r["history"], r["history"])
        c.check("try 2 XCom", r["xcom"].get("flaky:return_value") == '{"retried":true}', r["xcom"])

        # --- deferrable operator under dags test
        r = runs["tether_probe_defer"]
        c.check("defer run success (trigger ran inline, no triggerer)", r["state"] == "success", r)
        c.check("deferred task keeps try_number 1", r["tis"].get("wait_a_bit", {}).get("try_number") == 1, r["tis"])
        got = r["xcom"].get("wait_a_bit:return_value")
        c.check("resume method XCom", isinstance(got, dict) and got.get("resumed") is True, got)
        if not opts.inprocess:
            c.check("dags test logged inline trigger", "running trigger in line" in outputs["tether_probe_defer"])

        # --- failure
        r = runs["tether_probe_fail"]
        if not opts.inprocess:
            c.check("dags test on failing DAG exits non-zero", rcs["tether_probe_fail"] != 0, rcs["tether_probe_fail"])
        c.check("fail run failed", r["state"] == "failed", r["state"])
        c.check("boom failed", r["tis"].get("boom", {}).get("state") == "failed", r["tis"])

        # --- the other two readers must agree with sqlite3
        for dag_id in DAG_IDS:
            orm = read_orm(dag_id)
            c.check(f"ORM reader == sqlite3 reader ({dag_id})", orm == runs[dag_id], (orm, runs[dag_id]))
        t = time.monotonic()
        cli_states = read_cli_states("tether_probe", runs["tether_probe"]["run_id"], env)
        timings["tasks states-for-dag-run"] = time.monotonic() - t
        c.check(
            "CLI states-for-dag-run == sqlite3 states",
            cli_states == {k: v["state"] for k, v in runs["tether_probe"]["tis"].items()},
            cli_states,
        )

        print("timings (s): " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
        print("tether_probe readback: " + json.dumps(runs["tether_probe"], default=str))
    finally:
        if opts.keep:
            print(f"kept AIRFLOW_HOME={home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    print(f"e2e_probe: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
