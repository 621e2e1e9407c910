"""tether from Airflow with the airflow-provider-tether TetherOperator.

Two DAGs run the same Task:
  tether_provider_example             waits on the worker (`tether run`)
  tether_provider_deferrable_example  submits, then waits in the triggerer
                                      (`tether status` every poll_interval),
                                      so a 12-hour job holds no worker slot
The operator maps tether's exit code: 0 -> success with the outcome dict as
the XCom return value, 99 -> skipped, 1 -> failed (the reason is the
message), 2 -> failed without retry, 3 -> failed, retried.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, task

from tether_provider.operators.tether import TetherOperator

SITE = os.environ.get("TETHER_EXAMPLE_SITE", "local")  # e.g. "cluster"


@task
def report(outcome: dict):
    # The operator's XCom is the outcome as a dict (see README: the JSON line).
    print(f"run {outcome['run_id']}: {outcome['outcome']} ({outcome['reason']}), "
          f"{outcome.get('fraction')} done, results {outcome['results']}")
    return {"outcome": outcome["outcome"], "mode": outcome["results"].get("mode")}


with DAG(dag_id="tether_provider_example", schedule=None, catchup=False, tags=["tether", "example"]):
    analysis = TetherOperator(
        task_id="analysis",
        task_file="analysis.toml",                 # relative to this DAG file
        site=SITE,
        overrides={"env.MODE": "fast"},            # tether run --set env.MODE=fast
        retries=2,                                 # a retry reattaches to the running job
        retry_delay=timedelta(minutes=1),
    )
    report(analysis.output)


with DAG(
    dag_id="tether_provider_deferrable_example",
    schedule=None,
    catchup=False,
    params={"mode": "deferred"},
    tags=["tether", "example"],
):
    analysis = TetherOperator(
        task_id="analysis",
        task_file="analysis.toml",
        site=SITE,
        overrides={"env.MODE": "{{ params.mode }}"},  # templated
        deferrable=True,                           # needs a triggerer with tether on its PATH
        poll_interval=60,                          # seconds between `tether status` calls
        retries=2,
        retry_delay=timedelta(minutes=1),
    )
    report(analysis.output)
