"""DAGs for the real-Airflow e2e tests (tests/e2e/test_e2e.py).

One DAG per (mode, case), named ``e2e_<mode>_<case>``:

  mode   bash        BashOperator: ``tether run TASK`` (key from AIRFLOW_CTX_*)
         sync        TetherOperator (``tether run``)
         deferrable  TetherOperator(deferrable=True) (``tether submit`` + TetherTrigger)
  case   success, partial, skip, fail, retry (retries=1), badinput (operator only)

plus e2e_bash_mapped and e2e_sync_mapped: two mapped instances of one Task,
the array DAGs, and e2e_deferrable_hold(_cancel) for the tests on a real
deployment (test_triggerer.py).

Each DAG is ``work >> downstream``; ``downstream`` returns what it received
from ``work`` through XCom as ``{"received": <outcome dict>}``.

The Task file comes from the run conf: ``dag.test(run_conf={"task_dir": DIR})``
runs ``DIR/<case>.toml`` (the tests copy the files to a per-test folder).
The site comes from $TETHER_SITE (unset: the embedded local site).
"""

from __future__ import annotations

import json
from datetime import timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

from tether_provider.operators.tether import TetherOperator

MODES = ("bash", "sync", "deferrable")
CASES = {
    # case: (task file, extra operator kwargs, modes)
    "success": ("success.toml", {}, MODES),
    "partial": ("partial.toml", {}, MODES),
    "skip": ("skip.toml", {}, MODES),
    "fail": ("fail.toml", {}, MODES),
    "retry": ("retry.toml", {"retries": 1, "retry_delay": timedelta(seconds=0.5)}, MODES),
    # exit 2 must fail without using the retry (AirflowFailException).
    "badinput": (
        "success.toml",
        {"retries": 1, "retry_delay": timedelta(seconds=0.5), "overrides": {"resources.walltime": "banana"}},
        ("sync", "deferrable"),
    ),
}
TASK_FILE = '{{ dag_run.conf["task_dir"] }}/%s'


def work_task(mode: str, case: str, task_file: str, kwargs: dict):
    kwargs = dict(kwargs)
    if mode == "bash":
        return BashOperator(task_id="work", bash_command=f"tether run {TASK_FILE % task_file}", **kwargs)
    if mode == "deferrable":
        kwargs.update(deferrable=True, poll_interval=0.2)
        if case == "retry":
            # the test makes the trigger's watch answer with two errors: the
            # first is tolerated, the second fails the try
            kwargs["max_status_errors"] = 1
    return TetherOperator(task_id="work", task_file=TASK_FILE % task_file, **kwargs)


@task(task_id="downstream")
def downstream(outcome):
    if isinstance(outcome, str):  # BashOperator: the JSON line as a str
        outcome = json.loads(outcome)
    return {"received": outcome}


for _case, (_file, _kwargs, _modes) in CASES.items():
    for _mode in _modes:
        with DAG(
            dag_id=f"e2e_{_mode}_{_case}",
            schedule=None,
            catchup=False,
            tags=["tether-e2e"],
        ):
            _work = work_task(_mode, _case, _file, _kwargs)
            downstream(_work.output)


# Mapped task instances must get distinct keys. The CLI derives the key from
# AIRFLOW_CTX_*, which has no map index, so the BashOperator passes --key;
# the operator appends /<map_index> to its key itself.
MAPPED_KEY = "airflow/{{ dag.dag_id }}/{{ run_id }}/{{ ti.task_id }}/{{ ti.map_index }}"

with DAG(dag_id="e2e_bash_mapped", schedule=None, catchup=False, tags=["tether-e2e"]):
    BashOperator.partial(
        task_id="work", bash_command=f'tether run --key "{MAPPED_KEY}" {TASK_FILE % "success.toml"}', append_env=True
    ).expand(env=[{"PART": "0"}, {"PART": "1"}])

with DAG(dag_id="e2e_sync_mapped", schedule=None, catchup=False, tags=["tether-e2e"]):
    TetherOperator.partial(task_id="work", task_file=TASK_FILE % "success.toml").expand(
        overrides=[{"env.PART": "0"}, {"env.PART": "1"}]
    )


# An array Task fed by an upstream task's list, and a downstream task
# mapped over the elements' XCom. The BashOperator recipe: write the list
# as JSON Lines and pass it with --set array.params=FILE; the outcome JSON
# carries "elements".
@task(task_id="inputs")
def inputs():
    return [{"n": 2}, {"n": 3}, {"n": 4}]


@task(task_id="each")
def each(element):
    return {"index": element["index"], "sq": element["results"]["sq"], "outcome": element["outcome"]}


for _mode in ("sync", "deferrable"):
    with DAG(dag_id=f"e2e_{_mode}_array", schedule=None, catchup=False, tags=["tether-e2e"]):
        _work = TetherOperator(
            task_id="work",
            task_file=TASK_FILE % "array.toml",
            elements=inputs(),
            **({"deferrable": True, "poll_interval": 0.2} if _mode == "deferrable" else {}),
        )
        each.expand(element=_work.output)

with DAG(dag_id="e2e_bash_array", schedule=None, catchup=False, tags=["tether-e2e"]):
    BashOperator(
        task_id="work",
        bash_command=(
            'f=$(mktemp) && printf \'{"n":2}\\n{"n":3}\\n{"n":4}\\n\' > "$f" && '
            f'tether run --set array.params="$f" {TASK_FILE % "array.toml"}; rc=$?; rm -f "$f"; exit $rc'
        ),
    )


# For the real deployment (test_triggerer.py): a deferred Task that holds
# on until the test releases it, with and without cancel_on_kill.
for _suffix, _extra in (("", {}), ("_cancel", {"cancel_on_kill": True})):
    with DAG(dag_id=f"e2e_deferrable_hold{_suffix}", schedule=None, catchup=False, tags=["tether-e2e"]):
        TetherOperator(
            task_id="work", task_file=TASK_FILE % "hold.toml", deferrable=True, poll_interval=0.5, **_extra
        )
