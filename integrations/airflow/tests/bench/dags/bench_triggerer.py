"""DAGs of the triggerer benchmark (bench_triggerer.py): one deferrable
TetherOperator mapped over $TETHER_BENCH_TASKS Tasks, in each trigger mode
(watch: the shared tether watch; poll: one `tether step` per run every
poll_interval, 30 s by default -- the trigger as it was)."""

from __future__ import annotations

import os

from airflow.sdk import DAG

from tether_provider.operators.tether import TetherOperator

N = int(os.environ.get("TETHER_BENCH_TASKS", "500"))
# the Tasks sleep BASE + I*SPAN/N seconds once the gate opens
BASE, SPAN = os.environ.get("TETHER_BENCH_SLEEP", "60,120").split(",")

for _mode in ("watch", "poll"):
    with DAG(dag_id=f"bench_defer_{_mode}", schedule=None, catchup=False, max_active_tasks=N):
        TetherOperator.partial(
            task_id="work",
            task_file='{{ dag_run.conf["task_dir"] }}/hold.toml',
            deferrable=True,
            trigger_mode=_mode,
        ).expand(overrides=[{"env.I": str(i), "env.N": str(N), "env.BASE": BASE, "env.SPAN": SPAN} for i in range(N)])
