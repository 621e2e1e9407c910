"""Talking to the tether CLI: argument lists, the JSON last line, exit codes.

The CLI is the single source of truth: this module only builds command lines,
parses the one JSON object tether prints as its last stdout line, and turns
tether's exit code into the matching Airflow exception.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

try:  # Airflow >= 3.1 moved the task exceptions into the Task SDK
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException

# tether's exit codes (see the top-level README, "Outcomes and exit codes").
EXIT_PROCEED = 0  # succeeded or partial: downstream may run
EXIT_FAILED = 1  # failed or cancelled
EXIT_BAD_INPUT = 2  # bad task/site file, flag, unknown run: retrying cannot help
EXIT_INFRA = 3  # scheduler unreachable, state dir unusable, --timeout: retryable
EXIT_NOT_FINISHED = 75  # `tether step`: the run is still going
EXIT_SKIP = 99  # skipped outcome: skip downstream

Overrides = Mapping[str, Any] | Sequence[str] | None


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def set_args(overrides: Overrides) -> list[str]:
    """`--set k=v` arguments from a dict ({"resources.walltime": "30m"}) or a
    list of "k=v" strings. Values are passed through as strings (booleans as
    true/false); tether checks them against the task schema."""
    if not overrides:
        return []
    if isinstance(overrides, str):
        raise TypeError("overrides must be a dict or a list of 'key=value' strings, not a str")
    if isinstance(overrides, Mapping):
        pairs = [f"{k}={_format_value(v)}" for k, v in overrides.items()]
    else:
        pairs = [str(p) for p in overrides]
    args: list[str] = []
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} is not of the form key=value")
        args += ["--set", pair]
    return args


def site_args(site: str | None) -> list[str]:
    return ["--site", site] if site else []


def submit_argv(
    tether_bin: str,
    command: str,
    task_file: str,
    *,
    site: str | None = None,
    key: str | None = None,
    overrides: Overrides = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv for `tether run|submit [--site S] [--key K] [--set k=v]... TASK.toml`."""
    if command not in ("run", "submit"):
        raise ValueError(f"unexpected tether command {command!r}")
    argv = [tether_bin, command, *site_args(site)]
    if key:
        argv += ["--key", key]
    argv += set_args(overrides)
    argv += list(extra_args)
    argv.append(task_file)
    return argv


def step_argv(tether_bin: str, run_id: str, site: str | None = None) -> list[str]:
    return [tether_bin, "step", run_id, *site_args(site)]


def last_json(stdout: str | bytes | None) -> dict[str, Any] | None:
    """The last non-empty stdout line as a JSON object (tether's contract),
    else None: an earlier JSON line is never taken for the outcome."""
    if not stdout:
        return None
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", "replace")
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        return None
    try:
        obj = json.loads(lines[-1])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def airflow_key(dag_id: str, run_id: str, task_id: str, map_index: int | None = -1) -> str:
    """The idempotency key tether derives from AIRFLOW_CTX_* itself
    (airflow/<dag>/<run>/<task>), plus /<map_index> for mapped task instances,
    which the CLI cannot tell apart (Airflow exports no map-index variable)."""
    key = f"airflow/{dag_id}/{run_id}/{task_id}"
    if map_index is not None and map_index >= 0:
        key += f"/{map_index}"
    return key


def subprocess_env(extra: Mapping[str, Any] | None) -> dict[str, str]:
    env = dict(os.environ)
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


def _tail(text: str | None, lines: int = 5) -> str:
    if not text:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def describe(result: Mapping[str, Any] | None) -> str:
    if not result:
        return "tether"
    run = result.get("run_id") or "?"
    job = result.get("job_id")
    return f"tether run {run}" + (f" (job {job})" if job else "")


def check_result(
    returncode: int | None,
    result: dict[str, Any] | None,
    stderr: str | None = None,
    command: str = "tether",
) -> dict[str, Any]:
    """Map a finished `tether run`/`tether step` to Airflow.

    0 returns the outcome dict (it becomes the XCom return value);
    99 raises AirflowSkipException; 2 AirflowFailException (no retry);
    1 AirflowException with the reason; 3, a signal or anything else
    AirflowException, which Airflow retries when the task has retries left.
    """
    reason = (result or {}).get("reason") or _tail(stderr) or "no reason given"
    what = describe(result)
    if returncode == EXIT_PROCEED:
        if result is None:
            raise AirflowException(f"{command} exited 0 but printed no JSON outcome line")
        return result
    if returncode == EXIT_SKIP:
        raise AirflowSkipException(f"{what} skipped: {reason}")
    if returncode == EXIT_BAD_INPUT:
        raise AirflowFailException(f"{command}: bad input (not retrying): {reason}")
    if returncode == EXIT_FAILED:
        outcome = (result or {}).get("outcome") or "failed"
        raise AirflowException(f"{what} {outcome}: {reason}")
    if returncode == EXIT_INFRA:
        raise AirflowException(f"{command}: infrastructure error (retryable): {reason}")
    if returncode is None:
        raise AirflowException(f"{command} could not run: {reason}")
    if returncode < 0:
        raise AirflowException(f"{command} was killed by signal {-returncode}; {reason}")
    raise AirflowException(f"{command} exited with unexpected code {returncode}: {reason}")
