"""tether from Airflow with nothing but BashOperator.

`tether run` submits the Task (or reattaches to it), waits, and prints the
outcome as one JSON line last on stdout, which BashOperator pushes to XCom.
Its exit code is what Airflow acts on:
  0  succeeded, or partial (timed out with enough checkpointed): downstream runs
  99 skipped (on_timeout = "skip"): BashOperator's default skip_on_exit_code
  1  failed; 2 bad task file (a retry cannot help); 3 infrastructure (retry)
The idempotency key comes from AIRFLOW_CTX_DAG_ID/DAG_RUN_ID/TASK_ID, so a
retry after a lost worker reattaches to the job that is still running.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

HERE = Path(__file__).resolve().parent
# A site name from /etc/tether/sites or $TETHER_SITE_PATH (e.g. "cluster");
# "local" runs the Task as a process on the worker, to try the DAG out.
SITE = os.environ.get("TETHER_EXAMPLE_SITE", "local")

with DAG(dag_id="tether_bash_example", schedule=None, catchup=False, tags=["tether", "example"]):
    analysis = BashOperator(
        task_id="analysis",
        bash_command=f"tether run --site {SITE} --set env.MODE=fast {HERE / 'analysis.toml'}",
        skip_on_exit_code=99,  # tether's "skipped" outcome skips downstream (also the default)
        retries=2,
        retry_delay=timedelta(minutes=1),
    )

    @task
    def report(outcome_json: str):
        outcome = json.loads(outcome_json)  # BashOperator's XCom is the JSON line, a str
        print(f"run {outcome['run_id']} (job {outcome['job_id']} on {outcome['site']}): "
              f"{outcome['outcome']}, {outcome['reason']}")
        return {"outcome": outcome["outcome"], "chunks": outcome["results"].get("chunks")}

    report(analysis.output)
