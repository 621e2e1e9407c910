"""The pure helpers: command lines, the JSON last line, exit-code mapping."""

from __future__ import annotations

import pytest

from tether_provider._cli import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    airflow_key,
    check_result,
    last_json,
    set_args,
    step_argv,
    submit_argv,
)

from conftest import outcome


def test_set_args_from_dict_and_list():
    assert set_args({"resources.walltime": "30m", "mpi.launcher": "srun"}) == [
        "--set", "resources.walltime=30m", "--set", "mpi.launcher=srun"]
    assert set_args(["env.MODE=fast"]) == ["--set", "env.MODE=fast"]
    assert set_args({"retry.on_timeout": True, "resources.nodes": 2}) == [
        "--set", "retry.on_timeout=true", "--set", "resources.nodes=2"]
    assert set_args(None) == [] and set_args({}) == []


def test_set_args_rejects_bad_overrides():
    with pytest.raises(ValueError, match="key=value"):
        set_args(["nodes"])
    with pytest.raises(TypeError):
        set_args("resources.nodes=2")


def test_argv():
    assert submit_argv("tether", "run", "/t.toml") == ["tether", "run", "/t.toml"]
    assert submit_argv("/bin/tether", "submit", "/t.toml", site="cluster", key="k", overrides={"a.b": 1}) == [
        "/bin/tether", "submit", "--site", "cluster", "--key", "k", "--set", "a.b=1", "/t.toml"]
    assert step_argv("tether", "r-1", "cluster") == ["tether", "step", "r-1", "--site", "cluster"]
    assert step_argv("tether", "r-1") == ["tether", "step", "r-1"]
    with pytest.raises(ValueError):
        submit_argv("tether", "cancel", "/t.toml")


def test_last_json_takes_the_last_object_line():
    assert last_json('noise\n{"a":1}\n{"b":2}\n') == {"b": 2}
    assert last_json('{"a":1}\n\n  \n') == {"a": 1}
    # the contract is the LAST line: a torn last line is no outcome, and an
    # earlier JSON line is never taken for it
    assert last_json('{"a":1}\n{torn\n') is None
    assert last_json('{"a":1}\nplain text\n') is None
    assert last_json(b'{"a":1}\n') == {"a": 1}
    assert last_json("") is None and last_json(None) is None and last_json("[1]\n") is None


def test_airflow_key_matches_the_cli_and_tells_mapped_instances_apart():
    assert airflow_key("d", "manual__2026-01-01T00:00:00+00:00", "t") == "airflow/d/manual__2026-01-01T00:00:00+00:00/t"
    assert airflow_key("d", "r", "t", -1) == "airflow/d/r/t"
    assert airflow_key("d", "r", "t", 3) == "airflow/d/r/t/3"


@pytest.mark.parametrize("result", [outcome(), outcome(outcome="partial", reason="timed out; proceeding")])
def test_exit_0_returns_the_outcome(result):
    assert check_result(0, result) == result


def test_exit_0_without_json_is_an_error():
    with pytest.raises(AirflowException, match="no JSON"):
        check_result(0, None)


def test_exit_99_skips():
    with pytest.raises(AirflowSkipException, match="not enough work"):
        check_result(99, outcome(outcome="skipped", reason="not enough work"))


def test_exit_2_fails_without_retry():
    with pytest.raises(AirflowFailException, match="unknown key"):
        check_result(2, None, stderr="task.toml:3: resources.nodez: unknown key")


def test_exit_1_fails_with_the_reason():
    with pytest.raises(AirflowException) as e:
        check_result(1, outcome(outcome="failed", reason="exit code 3", run_id="x-1", job_id="9"))
    assert type(e.value) is AirflowException
    assert "exit code 3" in str(e.value) and "x-1" in str(e.value) and "job 9" in str(e.value)
    with pytest.raises(AirflowException, match="cancelled: by user"):
        check_result(1, outcome(outcome="cancelled", reason="by user"))


@pytest.mark.parametrize("rc,match", [(3, "infrastructure error"), (-9, "killed by signal 9"),
                                      (42, "unexpected code 42"), (None, "could not run")])
def test_other_codes_are_retryable_failures(rc, match):
    with pytest.raises(AirflowException, match=match) as e:
        check_result(rc, None, stderr="slurmctld unreachable")
    assert not isinstance(e.value, (AirflowFailException, AirflowSkipException))
    assert "slurmctld unreachable" in str(e.value)
