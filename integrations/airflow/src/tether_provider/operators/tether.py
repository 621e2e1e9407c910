"""TetherOperator: run a tether Task from Airflow.

The operator shells out to the tether CLI and parses the one JSON object it
prints last; tether decides the outcome, the operator only maps its exit code:

====  =========================================  ==============================
exit  tether outcome                             Airflow
====  =========================================  ==============================
0     succeeded, or partial (enough checkpoint)  success; the outcome dict is
                                                 the XCom return value
99    skipped (on_timeout/on_failure = "skip")   AirflowSkipException: the task
                                                 and its downstream are skipped
1     failed, cancelled                          AirflowException (the reason)
2     bad task/site file, flag, unknown run      AirflowFailException: no retry
3     infrastructure (scheduler unreachable...)  AirflowException: retried
====  =========================================  ==============================

Sync mode runs `tether run` on the worker and waits. ``deferrable=True`` runs
`tether submit`, then hands the wait to a TetherTrigger in the triggerer,
which polls `tether step`; the worker slot is free while the job runs.

With ``elements`` (a list of dicts, or an XCom from an upstream task), or
a task file with ``[array]``, the Task is an array Task: tether submits ONE
scheduler array, one element per dict (its ``TETHER_PARAMS``), and decides
every element. The XCom return value is then the list of elements, one dict
per element with its ``index``, ``params``, ``outcome``, ``reason``,
``results``, ``run_id``, ``job_id``, ``exit_code`` and ``attempts``, so a
downstream task can map over them (``use.expand(element=op.output)``); the
whole outcome (``counts``, ``succeeded``...) is the XCom ``outcome``.

Both modes pass an idempotency key (default ``airflow/<dag>/<run>/<task>``,
plus ``/<map_index>`` for mapped tasks), so an Airflow retry after a lost
worker reattaches to the job that is still running instead of submitting a
second one, and a retry after a finished, successful run does not run it again.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperator, BaseOperatorLink

from tether_provider._cli import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FINISHED,
    AirflowException,
    _tail,
    airflow_key,
    check_result,
    last_json,
    site_args,
    step_argv,
    submit_argv,
    subprocess_env,
)
from tether_provider.triggers.tether import TetherTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


SHOW_ATTEMPT_KEYS = ("n", "job_id", "state", "nodes", "submitted_at", "started_at", "ended_at", "exit_code",
                     "signal", "cause", "reason", "decision", "memory", "usage")


def show_essentials(detail: dict[str, Any]) -> dict[str, Any]:
    """What the XCom "tether_show" keeps of `tether show --json`."""
    return {
        "v": detail.get("v"),
        "run_id": detail.get("run_id"),
        "site": detail.get("site"),
        "backend": detail.get("backend"),
        "key": detail.get("key"),
        "state": detail.get("state"),
        "run_dir": detail.get("run_dir"),
        "attempts": [{k: a.get(k) for k in SHOW_ATTEMPT_KEYS if k in a} for a in detail.get("attempts") or []],
        "decision": detail.get("decision"),
        "results": detail.get("results"),
        "checkpoints": (detail.get("checkpoints") or [])[-5:],
        "logs": detail.get("logs"),
    }


class TetherRunLink(BaseOperatorLink):
    """The task's "tether run" button: the run's page on the tether monitor
    (``{monitor_url}/run/{run_id}``), when a monitor URL is configured
    (the operator's ``monitor_url``, else ``$TETHER_MONITOR_URL`` on the
    worker). Airflow 3 computes it on the worker when the try ends and
    keeps it in XCom; without a URL or a run there is no link."""

    name = "tether run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        url = getattr(operator, "monitor_url", None) or os.environ.get("TETHER_MONITOR_URL") or ""
        run_id = getattr(operator, "_tether_run_id", None)
        if not run_id and hasattr(ti_key, "xcom_pull"):
            try:
                run_id = ti_key.xcom_pull(task_ids=ti_key.task_id, key="run_id")
            except Exception:  # no XCom backend reachable: no link
                run_id = None
        if not url or not run_id:
            return ""
        return f"{str(url).rstrip('/')}/run/{quote(str(run_id), safe='')}"


class TetherOperator(BaseOperator):
    """Run the tether Task in ``task_file`` on a site and wait for its outcome.

    :param task_file: the Task's TOML file. A relative path is relative to
        the folder of the DAG file (symlinks resolved). (templated)
    :param site: site name or path; None uses $TETHER_SITE, else the embedded
        local site. (templated)
    :param overrides: task keys to override, as a dict
        ``{"resources.walltime": "30m"}`` or a list ``["env.MODE=fast"]``;
        passed as ``--set key=value``. (templated)
    :param key: idempotency key; default ``airflow/<dag_id>/<run_id>/<task_id>``
        (``/<map_index>`` appended for mapped tasks). (templated)
    :param tether_bin: the tether executable (on the workers and, when
        deferrable, on the triggerer).
    :param deferrable: submit, then wait in the triggerer instead of on the
        worker.
    :param poll_interval: when deferrable with trigger_mode="poll", seconds
        between two `tether step` calls; with "watch" (the default), the
        pause before a failed look is tried again. (Sync mode: tether polls
        at the site's own [poll] pace.)
    :param trigger_mode: "watch" (default): the triggerer's one shared
        `tether watch` process waits for the run; "poll": a `tether step`
        call per run every poll_interval.
    :param monitor_url: the tether monitor's address (e.g.
        ``http://monitor.example:9464``): the task gets a "tether run" link
        to the run's page there. Default ``$TETHER_MONITOR_URL``; neither:
        no link. (templated)
    :param call_timeout: seconds a short tether call on the worker (submit,
        step, cancel, show) may take before it is killed and the try fails
        with a retryable error (a hung shared filesystem). `tether run`
        itself is bounded by execution_timeout.
    :param env: extra environment variables for tether, e.g.
        ``{"TETHER_SITE_PATH": "/etc/tether/sites"}``. (templated)
    :param max_status_errors: when deferrable, failed looks at the run in a
        row (exit 2 or 3, the watch or step process killed, no JSON, no
        answer) tolerated; the next one fails the try with a retryable error
        (the job may still be running; the retry reattaches to it).
    :param elements: make the Task an array Task: a list of dicts, one per
        element (each reaches its element as ``TETHER_PARAMS`` and, for flat
        values, ``TETHER_PARAM_<name>``), e.g. an upstream task's XCom. The
        task file must not set ``[array] count`` or ``params``. (templated)
    :param cancel_on_kill: also `tether cancel` the job when the task is
        killed: in sync mode whenever Airflow kills the running task (marked
        failed or success, cleared, execution_timeout, and a worker shut
        down with SIGTERM); when deferred, only for a user's action (Airflow
        calls the trigger's on_kill for those, not for triggerer restarts).
        Off by default: the job is left running so that a retry reattaches
        to it.
    """

    template_fields: Sequence[str] = ("task_file", "site", "overrides", "key", "env", "elements", "monitor_url")
    operator_extra_links = (TetherRunLink(),)
    template_fields_renderers = {"overrides": "json", "env": "json", "elements": "json"}
    ui_color = "#dce9f5"

    def __init__(
        self,
        *,
        task_file: str,
        site: str | None = None,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
        key: str | None = None,
        tether_bin: str = "tether",
        deferrable: bool = False,
        poll_interval: float = 30.0,
        env: Mapping[str, str] | None = None,
        max_status_errors: int = 3,
        cancel_on_kill: bool = False,
        elements: Sequence[Mapping[str, Any]] | None = None,
        trigger_mode: str = "watch",
        call_timeout: float = 300.0,
        monitor_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(overrides, str):
            raise TypeError("overrides must be a dict or a list of 'key=value' strings")
        self.task_file = task_file
        self.site = site
        self.overrides = overrides
        self.key = key
        self.tether_bin = tether_bin
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.env = env
        self.max_status_errors = max_status_errors
        self.cancel_on_kill = cancel_on_kill
        self.elements = elements
        self.trigger_mode = trigger_mode
        self.call_timeout = float(call_timeout)
        self.monitor_url = monitor_url
        self._tether_run_id: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._run_key: str | None = None

    # ------------------------------------------------------------------ helpers
    def _site(self) -> str | None:
        return self.site or None  # a template that rendered to "" means "no --site"

    def _resolve_task_file(self) -> str:
        path = os.path.expanduser(str(self.task_file))
        if os.path.isabs(path):
            return path
        try:
            fileloc = self.dag.fileloc if self.has_dag() else None
        except Exception:  # no DAG, or a DAG without a file
            fileloc = None
        if fileloc:
            return os.path.join(os.path.dirname(os.path.realpath(fileloc)), path)
        return os.path.abspath(path)

    def _resolve_key(self, context: Context) -> str:
        if self.key:
            return str(self.key)
        ti = context["ti"]
        return airflow_key(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))

    def _env(self) -> dict[str, str]:
        return subprocess_env(self.env)

    def _call(self, argv: list[str], timeout: float | None = None) -> tuple[int, dict[str, Any] | None, str]:
        """Run a short tether command (submit, step, cancel, show); log its
        stderr; (rc, JSON, stderr). It is killed after call_timeout seconds
        (a hung shared filesystem): a retryable error."""
        self.log.info("$ %s", shlex.join(argv))
        timeout = self.call_timeout if timeout is None else timeout
        try:
            p = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                env=self._env(),
                check=False,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise AirflowException(f"{shlex.join(argv[:2])} gave no answer within {timeout:g}s (retryable)") from e
        except OSError as e:
            raise AirflowException(f"cannot run {argv[0]!r}: {e}") from e
        for line in p.stderr.splitlines():
            self.log.info("%s", line)
        return p.returncode, last_json(p.stdout), p.stderr

    def _log_outcome(self, result: dict[str, Any] | None) -> None:
        if result is not None and result.get("run_id"):
            self._tether_run_id = str(result["run_id"])  # for the "tether run" link
        if result is not None:
            self.log.info("tether outcome: %s", json.dumps(result, sort_keys=True))

    def _overrides(self, params_file: str | None) -> Sequence[str] | Mapping[str, Any] | None:
        """The overrides, plus array.params when the operator has elements."""
        if params_file is None:
            return self.overrides
        base = self.overrides or []
        pairs = [f"{k}={v}" for k, v in base.items()] if isinstance(base, Mapping) else [str(p) for p in base]
        return [*pairs, f"array.params={params_file}"]

    def _write_elements(self) -> str | None:
        """Write the elements as a JSON Lines file for tether (it reads the
        file once, at submit: the elements are kept in the run)."""
        if self.elements is None:
            return None
        elements = self.elements
        if isinstance(elements, (str, bytes)) or not isinstance(elements, Sequence):
            raise TypeError(f"elements must be a list of dicts, not {type(elements).__name__}")
        if not elements:
            raise ValueError("elements is empty: an array Task needs at least one element")
        fd, path = tempfile.mkstemp(prefix="tether-elements-", suffix=".jsonl")
        with os.fdopen(fd, "w") as f:
            for i, el in enumerate(elements):
                if not isinstance(el, Mapping):
                    os.unlink(path)
                    raise TypeError(f"element {i} is a {type(el).__name__}, not a dict")
                f.write(json.dumps(el, sort_keys=True) + "\n")
        return path

    def _push_show(self, context: Context, result: dict[str, Any]) -> None:
        """The XCom "tether_show": the essentials of `tether show --json`
        (attempts with their jobs, nodes, states and exit codes; the decision
        and its evidence). Best effort: a failed show never fails the task."""
        target = result.get("run_dir") or result.get("run_id")
        push = getattr(context.get("ti"), "xcom_push", None)
        if not target or push is None:
            return
        try:
            rc, detail, err = self._call([self.tether_bin, "show", "--json", target, *site_args(self._site())], timeout=60)
        except AirflowException as e:
            self.log.warning("tether show %s: %s", target, e)
            return
        if rc != 0 or not detail:
            self.log.warning("tether show %s exited %s: %s", target, rc, _tail(err))
            return
        push(key="tether_show", value=show_essentials(detail))

    def _array_result(self, context: Context, result: dict[str, Any]) -> Any:
        """An array run's XCom: its elements (the outcome goes to the XCom
        "outcome"); any other run's: its outcome. Both push "tether_show"."""
        self._push_show(context, result)
        els = result.get("elements")
        if not isinstance(els, list):
            return result
        context["ti"].xcom_push(key="outcome", value=result)
        keep = ("index", "params", "outcome", "reason", "results", "run_id", "job_id", "exit_code", "attempts")
        return [{k: el.get(k) for k in keep} for el in els]

    # ------------------------------------------------------------------ execute
    def execute(self, context: Context) -> Any:
        self._run_key = self._resolve_key(context)
        task_file = self._resolve_task_file()
        params_file = self._write_elements()
        try:
            if self.deferrable:
                return self._execute_deferrable(task_file, params_file, context)
            result = self._execute_sync(task_file, params_file)
        finally:
            if params_file:
                os.unlink(params_file)
        return self._array_result(context, result)

    def _execute_sync(self, task_file: str, params_file: str | None = None) -> dict[str, Any]:
        argv = submit_argv(
            self.tether_bin, "run", task_file, site=self._site(), key=self._run_key, overrides=self._overrides(params_file)
        )
        self.log.info("$ %s", shlex.join(argv))
        try:
            self._proc = proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=self._env(),
            )
        except OSError as e:
            raise AirflowException(f"cannot run {self.tether_bin!r}: {e}") from e

        # tether's progress and the Task's logs arrive on stderr: stream them
        # into the task log as they come, keep the end for error messages.
        tail: collections.deque[str] = collections.deque(maxlen=20)

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip("\n")
                tail.append(line)
                self.log.info("%s", line)

        reader = threading.Thread(target=pump, name="tether-stderr", daemon=True)
        reader.start()
        assert proc.stdout is not None
        out = proc.stdout.read()
        rc = proc.wait()
        reader.join(timeout=10)
        result = last_json(out)
        self._log_outcome(result)
        return check_result(rc, result, "\n".join(tail), "tether run")

    def _execute_deferrable(self, task_file: str, params_file: str | None, context: Context) -> dict[str, Any]:
        argv = submit_argv(
            self.tether_bin, "submit", task_file, site=self._site(), key=self._run_key, overrides=self._overrides(params_file)
        )
        rc, result, err = self._call(argv)
        if rc != 0 or result is None:
            self._log_outcome(result)
            check_result(rc, result, err, "tether submit")  # raises for rc != 0
            raise AirflowException("tether submit printed no JSON line")
        run_id = result.get("run_id")
        if not run_id:
            raise AirflowException(f"tether submit printed no run_id: {result}")
        self._tether_run_id = str(run_id)
        if result.get("final"):
            # The key belongs to a run that already has an outcome that may
            # proceed (e.g. this is a retry after the outcome was decided):
            # take its exit code from `tether step` without deferring.
            rc, status, err = self._call(step_argv(self.tether_bin, run_id, self._site()))
            if rc != EXIT_NOT_FINISHED:
                self._log_outcome(status)
                return self._array_result(context, check_result(rc, status, err, "tether step"))
        self.log.info(
            "tether run %s (job %s) is %s; deferring (%s)",
            run_id,
            result.get("job_id") or "?",
            result.get("outcome") or "submitted",
            "the triggerer's tether watch waits for it" if self.trigger_mode == "watch"
            else f"tether step every {self.poll_interval}s",
        )
        self._defer_to_trigger(result)
        raise AssertionError("unreachable: defer() raises TaskDeferred")  # pragma: no cover

    def _defer_to_trigger(self, result: dict[str, Any]) -> None:
        """Defer to a TetherTrigger for the run of a submit or step result."""
        self.defer(
            trigger=TetherTrigger(
                run_id=result["run_id"],
                run_dir=result.get("run_dir") or None,
                site=self._site(),
                tether_bin=self.tether_bin,
                poll_interval=self.poll_interval,
                env=dict(self.env) if self.env else None,
                max_status_errors=self.max_status_errors,
                cancel_on_kill=self.cancel_on_kill,
                mode=self.trigger_mode,
            ),
            method_name="execute_complete",
            # Airflow does not apply execution_timeout while deferred.
            timeout=self.execution_timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: map the final `tether step` like `tether run`."""
        if not event or "returncode" not in event:
            # resumed without the trigger's event (the worker and the
            # triggerer were killed mid-deferral): look at the run again
            return self._recheck(context)
        result = event.get("result")
        if event.get("run_id"):
            self._tether_run_id = str(event["run_id"])
        self._log_outcome(result)
        if event.get("gave_up"):
            # the trigger could not look at the run (max_status_errors + 1
            # failed looks): not a verdict on the Task, and its job may
            # still be running; a retry reattaches to it by the key
            reason = (result or {}).get("reason") or event.get("stderr") or "no answer"
            raise AirflowException(
                f"tether could not look at run {event.get('run_id')} (exit {event.get('returncode')}): {reason}; "
                "its job may still be running: a retry of this task reattaches to it"
            )
        return self._array_result(context, check_result(event.get("returncode"), result, event.get("stderr"), "tether step"))

    def _recheck(self, context: Context) -> Any:
        """Find the run by the task's key and go on from where it is: its
        outcome when it is decided, a new deferral while it runs."""
        self._run_key = self._resolve_key(context)
        self.log.warning(
            "resumed without the trigger's event (event=None: the worker and triggerer were probably "
            "restarted mid-deferral); looking at the run of key %s again", self._run_key
        )
        rc, result, err = self._call(
            [self.tether_bin, "step", "--key", self._run_key, *site_args(self._site())]
        )
        if rc == EXIT_BAD_INPUT and "no run has key" in ((result or {}).get("reason") or err or ""):
            raise AirflowException(
                f"resumed without the trigger's event, and no tether run has key {self._run_key!r}: "
                "the submit never happened or the run was pruned; a retry of this task submits it"
            )
        if rc == EXIT_NOT_FINISHED and result and result.get("run_id"):
            self._log_outcome(result)
            self._defer_to_trigger(result)
        self._log_outcome(result)
        return self._array_result(context, check_result(rc, result, err, "tether step"))

    # ------------------------------------------------------------------ kill
    def on_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            # SIGTERM: `tether run` stops waiting (exit 3); the job keeps running.
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not (self.cancel_on_kill and self._run_key):
            return
        rc, result, err = self._call(
            [self.tether_bin, "cancel", "--key", self._run_key, *site_args(self._site())]
        )
        self.log.info(
            "cancel_on_kill: tether cancel --key %s exited %s: %s",
            self._run_key,
            rc,
            (result or {}).get("reason") or _tail(err) or "",
        )
