"""Tiny DAGs used by e2e_probe.py to check the pinned Airflow 3.x install.

tether_probe        BashOperator emitting JSON -> @task reading it via XCom,
                    plus a BashOperator skipped via skip_on_exit_code=99.
tether_probe_retry  BashOperator that fails on try 1 and succeeds on try 2
                    (retries=1), to see whether `airflow dags test` retries.
tether_probe_defer  A deferrable operator (TimeDeltaTrigger) to see whether
                    `airflow dags test` runs the trigger inline.
tether_probe_fail   BashOperator exiting 3 (no retries): run must fail and
                    `airflow dags test` must exit non-zero.
"""

from __future__ import annotations

import json
from datetime import timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import DAG, BaseOperator, task

# Prints the Airflow context env vars (one per line), then a JSON line last.
# BashOperator pushes the LAST stdout line to XCom key "return_value".
EMIT_JSON = r"""
echo "ctx DAG_ID=${AIRFLOW_CTX_DAG_ID:-<unset>}"
echo "ctx DAG_RUN_ID=${AIRFLOW_CTX_DAG_RUN_ID:-<unset>}"
echo "ctx TASK_ID=${AIRFLOW_CTX_TASK_ID:-<unset>}"
echo "ctx TRY_NUMBER=${AIRFLOW_CTX_TRY_NUMBER:-<unset>}"
echo "ctx LOGICAL_DATE=${AIRFLOW_CTX_LOGICAL_DATE:-<unset>}"
env | grep '^AIRFLOW_CTX_' | sort | sed 's/^/env /'
printf '{"dag_id":"%s","run_id":"%s","task_id":"%s","try":"%s","answer":42}\n' \
  "$AIRFLOW_CTX_DAG_ID" "$AIRFLOW_CTX_DAG_RUN_ID" "$AIRFLOW_CTX_TASK_ID" "${AIRFLOW_CTX_TRY_NUMBER:-}"
"""

with DAG(dag_id="tether_probe", schedule=None, catchup=False, tags=["tether"]):
    emit = BashOperator(task_id="emit_json", bash_command=EMIT_JSON)

    @task(task_id="read_json")
    def read_json(raw: str) -> dict:
        data = json.loads(raw)
        assert data["answer"] == 42, data
        data["seen_by"] = "read_json"
        return data

    skip99 = BashOperator(
        task_id="skip_99",
        bash_command="echo about to exit 99; exit 99",
        skip_on_exit_code=99,
    )

    read_json(emit.output) >> skip99


# Fails on try 1, succeeds on try 2. The marker file lives under $AIRFLOW_HOME so
# repeated probe runs with a fresh AIRFLOW_HOME start clean.
RETRY_CMD = r"""
echo "try=${AIRFLOW_CTX_TRY_NUMBER:-<unset>}"
marker="${AIRFLOW_HOME}/retry_marker_${AIRFLOW_CTX_DAG_RUN_ID//[^A-Za-z0-9]/_}"
if [ ! -e "$marker" ]; then touch "$marker"; echo "first attempt: failing"; exit 1; fi
echo '{"retried":true}'
"""

with DAG(dag_id="tether_probe_retry", schedule=None, catchup=False, tags=["tether"]):
    BashOperator(
        task_id="flaky",
        bash_command=RETRY_CMD,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


class WaitABit(BaseOperator):
    """Defers on a TimeDeltaTrigger, then returns a value from the resume method."""

    def execute(self, context):
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=2)),
            method_name="execute_complete",
        )

    def execute_complete(self, context, event=None):
        return {"resumed": True, "event": str(event)}


with DAG(dag_id="tether_probe_defer", schedule=None, catchup=False, tags=["tether"]):
    WaitABit(task_id="wait_a_bit")


with DAG(dag_id="tether_probe_fail", schedule=None, catchup=False, tags=["tether"]):
    BashOperator(task_id="boom", bash_command="echo failing on purpose; exit 3", retries=0)
