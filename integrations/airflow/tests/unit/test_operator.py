"""TetherOperator against the fake tether: argv, exit codes, deferral."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG

from tether_provider._cli import AirflowException, AirflowFailException, AirflowSkipException
from tether_provider.operators.tether import TetherOperator
from tether_provider.triggers.tether import TetherTrigger

from conftest import outcome

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # pragma: no cover
    from airflow.sdk.exceptions import TaskDeferred

HERE = Path(__file__).resolve().parent
RUN_ID = "manual__2026-11-26T10:00:00+00:00"


def context(task_id="analysis", map_index=-1):
    return {"ti": SimpleNamespace(dag_id="pipeline", run_id=RUN_ID, task_id=task_id, map_index=map_index)}


def op(fake, **kw) -> TetherOperator:
    kw.setdefault("task_id", "analysis")
    kw.setdefault("task_file", "/pipelines/analysis.toml")
    with DAG(dag_id="pipeline", schedule=None):
        return TetherOperator(tether_bin=str(fake.bin), **kw)


KEY = f"airflow/pipeline/{RUN_ID}/analysis"


# --------------------------------------------------------------------------- arrays
def test_elements_make_an_array_task_and_push_the_elements(fake):
    els = [{"index": 0, "params": {"f": "a"}, "outcome": "succeeded", "results": {"x": "1"}, "run_id": "r.0", "job_id": "7_0"},
           {"index": 1, "params": {"f": "b"}, "outcome": "succeeded", "results": {"x": "2"}, "run_id": "r.1", "job_id": "7_1"}]
    fake.reply("run", 0, outcome(counts={"succeeded": 2}, elements=els))
    pushed = {}
    ctx = context()
    ctx["ti"].xcom_push = lambda key, value: pushed.__setitem__(key, value)
    got = op(fake, overrides={"resources.walltime": "30m"}, elements=[{"f": "a"}, {"f": "b"}]).execute(ctx)
    assert pushed["outcome"]["counts"] == {"succeeded": 2}
    (argv,) = fake.argvs("run")
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets[0] == "resources.walltime=30m" and sets[1].startswith("array.params="), argv
    assert not os.path.exists(sets[1].split("=", 1)[1]), "the elements file is removed after the submit"
    assert (fake.dir / "params.jsonl").read_text() == '{"f": "a"}\n{"f": "b"}\n'
    assert [e["results"]["x"] for e in got] == ["1", "2"], "the return value is the elements"
    assert got[1]["params"] == {"f": "b"} and got[1]["job_id"] == "7_1"


@pytest.mark.parametrize("bad", ["a,b", [1, 2], [], {"f": "a"}])
def test_elements_must_be_a_list_of_dicts(fake, bad):
    with pytest.raises((TypeError, ValueError)):
        op(fake, elements=bad).execute(context())
    assert fake.argvs() == []


# --------------------------------------------------------------------------- sync: tether run
def test_sync_success_returns_the_outcome_and_passes_key_site_overrides(fake):
    fake.reply("run", 0, outcome(results={"rows": "3"}), stderr="tether: submitted run analysis-1 as job 7\n")
    o = op(fake, site="cluster", overrides={"resources.walltime": "30m"})
    assert o.execute(context()) == outcome(results={"rows": "3"})
    assert fake.argvs() == [["tether", "run", "--site", "cluster", "--key", KEY,
                             "--set", "resources.walltime=30m", "/pipelines/analysis.toml"]]


def test_sync_key_override_and_mapped_instances(fake):
    fake.reply("run", 0, outcome())
    op(fake, key="my-key").execute(context())
    op(fake).execute(context(map_index=4))
    keys = [a[a.index("--key") + 1] for a in fake.argvs("run")]
    assert keys == ["my-key", KEY + "/4"]


def test_relative_task_file_is_relative_to_the_dag_file(fake):
    fake.reply("run", 0, outcome())
    op(fake, task_file="tasks/a.toml", site="").execute(context())
    argv = fake.argvs("run")[0]
    assert argv[-1] == str(HERE / "tasks" / "a.toml")
    assert "--site" not in argv, "a site that rendered to '' means no --site"


def test_sync_partial_is_success(fake):
    fake.reply("run", 0, outcome(outcome="partial", scheduler_state="TIMEOUT", fraction=0.9))
    assert op(fake).execute(context())["outcome"] == "partial"


@pytest.mark.parametrize(
    "rc,exc,match",
    [
        (99, AirflowSkipException, "skipped: not enough work"),
        (1, AirflowException, "failed: not enough work"),
        (2, AirflowFailException, "bad input"),
        (3, AirflowException, "infrastructure error"),
    ],
)
def test_sync_exit_codes(fake, rc, exc, match):
    name = {99: "skipped", 1: "failed"}.get(rc, "error")
    fake.reply("run", rc, outcome(outcome=name, final=rc in (1, 99), proceed=False, reason="not enough work"))
    with pytest.raises(exc, match=match) as e:
        op(fake).execute(context())
    if exc is AirflowException:
        assert not isinstance(e.value, (AirflowFailException, AirflowSkipException))


def test_sync_killed_tether_run_is_a_retryable_failure(fake):
    fake.reply("run", 0, signal=signal.SIGKILL, stderr="tether: submitted run analysis-1 as job 7\n")
    with pytest.raises(AirflowException, match="killed by signal 9") as e:
        op(fake).execute(context())
    assert not isinstance(e.value, AirflowFailException)


def test_sync_missing_binary(tmp_path):
    with DAG(dag_id="pipeline", schedule=None):
        o = TetherOperator(task_id="analysis", task_file="/t.toml", tether_bin=str(tmp_path / "nope"))
    with pytest.raises(AirflowException, match="cannot run"):
        o.execute(context())


def test_env_is_passed_to_tether(fake, tmp_path):
    dump = tmp_path / "env.txt"
    fake.bin.write_text(f'#!/bin/sh\necho "$TETHER_SITE_PATH" > {dump}\necho \'{{"outcome":"succeeded"}}\'\n')
    op(fake, env={"TETHER_SITE_PATH": "/etc/sites"}).execute(context())
    assert dump.read_text().strip() == "/etc/sites"


# --------------------------------------------------------------------------- deferrable: submit + trigger
def test_deferrable_submits_then_defers_to_the_trigger(fake):
    fake.reply("submit", 0, outcome(outcome="pending", final=False, proceed=False, run_id="analysis-9"))
    o = op(fake, site="cluster", deferrable=True, poll_interval=5, env={"A": "1"}, max_status_errors=2)
    with pytest.raises(TaskDeferred) as d:
        o.execute(context())
    assert fake.argvs() == [["tether", "submit", "--site", "cluster", "--key", KEY, "/pipelines/analysis.toml"]]
    t = d.value.trigger
    assert isinstance(t, TetherTrigger) and d.value.method_name == "execute_complete"
    assert t.serialize() == ("tether_provider.triggers.tether.TetherTrigger", {
        "run_id": "analysis-9", "site": "cluster", "tether_bin": str(fake.bin), "poll_interval": 5.0,
        "env": {"A": "1"}, "max_status_errors": 2, "run_dir": "/state/runs/analysis-1",
        "status_timeout": 300.0, "cancel_on_kill": False, "mode": "watch"})
    assert d.value.timeout is None  # no execution_timeout


def test_deferral_is_bounded_by_execution_timeout(fake):
    import datetime

    fake.reply("submit", 0, outcome(outcome="pending", final=False, proceed=False))
    o = op(fake, deferrable=True, cancel_on_kill=True, execution_timeout=datetime.timedelta(hours=12))
    with pytest.raises(TaskDeferred) as d:
        o.execute(context())
    assert d.value.timeout == datetime.timedelta(hours=12)
    assert d.value.trigger.cancel_on_kill is True


def test_deferrable_finished_run_completes_without_deferring(fake):
    """A retry of a task whose run already proceeded: submit prints the final outcome."""
    fake.reply("submit", 0, outcome(run_id="analysis-9"))
    fake.reply("step", 0, outcome(run_id="analysis-9"))
    assert op(fake, deferrable=True).execute(context())["run_id"] == "analysis-9"
    assert [a[1] for a in fake.argvs()] == ["submit", "step"]


@pytest.mark.parametrize("rc,exc", [(2, AirflowFailException), (3, AirflowException)])
def test_deferrable_submit_errors(fake, rc, exc):
    fake.reply("submit", rc, stderr="tether: boom\n")
    with pytest.raises(exc, match="boom"):
        op(fake, deferrable=True).execute(context())


@pytest.mark.parametrize(
    "event,exc",
    [
        ({"returncode": 99, "result": outcome(outcome="skipped")}, AirflowSkipException),
        ({"returncode": 1, "result": outcome(outcome="failed", reason="exit code 3")}, AirflowException),
        ({"returncode": 2, "result": None, "stderr": "no such run"}, AirflowFailException),
        ({"returncode": 3, "result": None, "stderr": "state dir unusable"}, AirflowException),
        ({"returncode": -9, "result": None, "stderr": ""}, AirflowException),
    ],
)
def test_execute_complete_maps_like_the_sync_path(fake, event, exc):
    with pytest.raises(exc):
        op(fake, deferrable=True).execute_complete(context(), event)


def test_execute_complete_success(fake):
    got = op(fake, deferrable=True).execute_complete(context(), {"returncode": 0, "result": outcome()})
    assert got == outcome()


# --------------------------------------------------------------------------- misc
def test_template_fields_and_bad_overrides(fake):
    assert set(TetherOperator.template_fields) == {"task_file", "site", "overrides", "key", "env", "elements", "monitor_url"}
    with pytest.raises(TypeError):
        op(fake, overrides="resources.nodes=2")


def test_on_kill_cancels_only_when_asked(fake):
    fake.reply("cancel", 0, outcome(outcome="cancelled"))
    o = op(fake)
    o._run_key = KEY
    o.on_kill()
    assert fake.argvs() == []
    o = op(fake, cancel_on_kill=True, site="cluster")
    o._run_key = KEY
    o.on_kill()
    assert fake.argvs() == [["tether", "cancel", "--key", KEY, "--site", "cluster"]]


def test_the_tether_show_essentials_go_to_xcom(fake):
    """After a run that may proceed, `tether show --json` (best effort, with
    a timeout) fills the XCom "tether_show": attempts, decision, logs."""
    fake.reply("run", 0, outcome())
    detail = {"v": 1, "run_id": "analysis-1", "site": "local", "backend": "local", "state": "succeeded",
              "run_dir": "/state/runs/analysis-1", "env_secret": "never",
              "attempts": [{"n": 1, "job_id": "7", "state": "NODE_FAIL", "nodes": ["n1"], "exit_code": 143, "stdout": "/x"},
                           {"n": 2, "job_id": "8", "state": "COMPLETED", "exit_code": 0}],
              "decision": {"outcome": "succeeded", "reason": "completed", "evidence": ["exit file of attempt 2: exit 0"]},
              "logs": {"commands": ["tether logs analysis-1"]}}
    fake.reply("show", 0, detail)
    pushed = {}
    ctx = context()
    ctx["ti"].xcom_push = lambda key, value: pushed.__setitem__(key, value)
    op(fake).execute(ctx)
    (argv,) = fake.argvs("show")
    assert argv == ["tether", "show", "--json", "/state/runs/analysis-1"]
    got = pushed["tether_show"]
    assert [a["job_id"] for a in got["attempts"]] == ["7", "8"] and got["attempts"][0]["state"] == "NODE_FAIL"
    assert "stdout" not in got["attempts"][0] and "env_secret" not in got
    assert got["decision"]["evidence"] == ["exit file of attempt 2: exit 0"]
    # a failed show never fails the task
    fake.reply("run", 0, outcome())
    fake.reply("show", 3, None)
    pushed.clear()
    assert op(fake).execute(ctx)["outcome"] == "succeeded" and "tether_show" not in pushed


def test_a_hung_tether_call_on_the_worker_times_out(fake):
    fake.reply("submit", 0, outcome(), sleep=30)
    with pytest.raises(AirflowException, match="gave no answer within 0.5s"):
        op(fake, deferrable=True, call_timeout=0.5).execute(context())


def test_tether_run_link(fake, monkeypatch):
    """The "tether run" extra link goes to the monitor's run page once the
    run is known; no monitor URL, no link."""
    from tether_provider.operators.tether import TetherRunLink

    fake.reply("run", 0, outcome())
    o = op(fake, monitor_url="https://monitor.example:9464/")
    assert TetherRunLink().get_link(o, ti_key=None) == ""  # no run yet
    o.execute(context())
    assert TetherRunLink().get_link(o, ti_key=None) == "https://monitor.example:9464/run/analysis-1"
    assert any(isinstance(link, TetherRunLink) for link in TetherOperator.operator_extra_links)
    o2 = op(fake)
    o2.execute(context())
    monkeypatch.delenv("TETHER_MONITOR_URL", raising=False)
    assert TetherRunLink().get_link(o2, ti_key=None) == ""
    monkeypatch.setenv("TETHER_MONITOR_URL", "http://mon:1")
    assert TetherRunLink().get_link(o2, ti_key=None) == "http://mon:1/run/analysis-1"


def test_resumed_without_an_event_looks_at_the_run_again(fake):
    """execute_complete(event=None) (worker and triggerer killed
    mid-deferral): tether step --key finds the run; decided -> its
    outcome, still running -> deferred again, no run -> a clear error."""
    from airflow.sdk.exceptions import TaskDeferred

    fake.reply("step", 0, outcome())
    got = op(fake, deferrable=True).execute_complete(context(), None)
    assert got["outcome"] == "succeeded"
    (argv,) = fake.argvs("step")
    assert argv[:3] == ["tether", "step", "--key"] and argv[3].startswith("airflow/pipeline/")
    fake.reply("step", 75, outcome(outcome="running", final=False))
    with pytest.raises(TaskDeferred) as d:
        op(fake, deferrable=True).execute_complete(context(), {})
    assert d.value.trigger.run_dir == "/state/runs/analysis-1"
    fake.reply("step", 2, outcome(outcome="error", reason='no run has key "airflow/x"; looked on the sites local'))
    with pytest.raises(AirflowException, match="no tether run has key"):
        op(fake, deferrable=True).execute_complete(context(), None)


def test_a_trigger_that_gave_up_fails_the_try_retryably(fake):
    event = {"run_id": "analysis-1", "returncode": 2, "result": None, "stderr": "no such run", "gave_up": True}
    with pytest.raises(AirflowException, match="its job may still be running") as e:
        op(fake, deferrable=True).execute_complete(context(), event)
    assert not isinstance(e.value, AirflowFailException)
