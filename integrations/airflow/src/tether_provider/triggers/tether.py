"""TetherTrigger: waits for a submitted tether run in the triggerer.

By default (mode="watch") every TetherTrigger of a triggerer registers its
run with ONE long-lived `tether watch --stdin` process (per tether binary,
site and environment; see _watch.py) and awaits the run's outcome line:
tether watch waits for all the runs at once (one inotify watcher, one
batched scheduler query per site per interval), decides what nobody else
decides, and reports the outcome whoever decided it. A thousand deferred
tasks cost one process, no process start per poll, and a job's end is
noticed within about a second. mode="poll" is the earlier way: `tether step
RUN_DIR` as a subprocess every poll_interval seconds per run.

The run is named by its directory, so the triggerer finds it whatever its
own TETHER_STATE_DIR/XDG_STATE_HOME say; it needs the `tether` binary, the
site file and read access to that directory. No `tether monitor` is needed:
the trigger's tether process decides the run (a monitor, if one runs, may
decide it first; the trigger then reports that outcome).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from tether_provider._cli import EXIT_NOT_FINISHED, _tail, last_json, site_args, step_argv, subprocess_env
from tether_provider.triggers._watch import WatchGone, shared_watch

MODES = ("watch", "poll")

# Exit codes of `tether step` that are a decision, not a hiccup:
# 0 proceed, 1 failed/cancelled, 99 skipped. Exit 2 (the run is not found)
# counts as a failed look: on a triggerer it usually means an environment
# that differs from the worker's, which retrying with a fixed set-up cures.
FINAL_CODES = frozenset({0, 1, 99})

# seconds on_kill waits for the cancelled run's outcome (Airflow's
# [triggerer] on_kill_timeout is 30 s by default)
ON_KILL_WAIT = 20.0


class TetherTrigger(BaseTrigger):
    """Poll `tether step RUN` until the run has an outcome.

    Emits one TriggerEvent with ``{"returncode", "result", "stderr", "run_id"}``:
    the exit code and parsed JSON of the last `tether step` call, which the
    operator maps exactly like the exit code of `tether run`.

    :param run_id: the run id printed by `tether submit`.
    :param run_dir: the run directory printed by `tether submit`; the
        trigger looks the run up by it (falls back to run_id).
    :param site: site name or path (None: $TETHER_SITE, else the local site).
    :param tether_bin: the tether executable on the triggerer.
    :param poll_interval: seconds between two looks.
    :param env: extra environment variables for tether.
    :param max_status_errors: consecutive failed looks (exit 2 or 3, a
        signal, no JSON, no answer within status_timeout) tolerated before
        giving up; the operator then maps the last exit code.
    :param status_timeout: seconds one `tether step` call may take (a
        hung shared filesystem) before it is killed and counted as failed.
    :param cancel_on_kill: when a user marks the deferred task failed or
        success, or clears it, `tether cancel` the run (Airflow calls
        on_kill() only for user actions, not for triggerer restarts).
    :param mode: "watch" (default): one shared `tether watch` process per
        triggerer waits for every run; "poll": one `tether step` call per
        run every poll_interval (poll_interval and status_timeout then
        apply to each call; in watch mode poll_interval is the pause before
        a failed look is tried again).
    """

    def __init__(
        self,
        run_id: str,
        site: str | None = None,
        tether_bin: str = "tether",
        poll_interval: float = 30.0,
        env: dict[str, str] | None = None,
        max_status_errors: int = 3,
        run_dir: str | None = None,
        status_timeout: float = 300.0,
        cancel_on_kill: bool = False,
        mode: str = "watch",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.run_id = run_id
        self.run_dir = run_dir or None
        self.status_timeout = float(status_timeout)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.site = site
        self.tether_bin = tether_bin
        self.poll_interval = float(poll_interval)
        self.env = dict(env) if env else None
        self.max_status_errors = int(max_status_errors)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "site": self.site,
                "tether_bin": self.tether_bin,
                "poll_interval": self.poll_interval,
                "env": self.env,
                "max_status_errors": self.max_status_errors,
                "run_dir": self.run_dir,
                "status_timeout": self.status_timeout,
                "cancel_on_kill": self.cancel_on_kill,
                "mode": self.mode,
            },
        )

    @property
    def _target(self) -> str:
        return self.run_dir or self.run_id

    async def _tether(self, argv: list[str], timeout: float) -> tuple[int | None, str, str]:
        """Run one tether command: (returncode, stdout, stderr); returncode is
        None when it could not run or gave no answer within timeout."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=subprocess_env(self.env),
            )
        except OSError as e:  # tether not found / not executable on the triggerer
            return None, "", f"cannot run {self.tether_bin!r}: {e}"
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes on Python 3.10
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            return None, "", f"tether {argv[1]} gave no answer within {timeout:g}s"
        except asyncio.CancelledError:
            # The trigger is being cancelled (task cleared, triggerer stopping):
            # don't leave a half-finished tether call behind. The job itself
            # keeps running; the next try reattaches to it by its key.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    async def _status(self) -> tuple[int | None, str, str]:
        """One `tether step` call: (returncode, stdout, stderr)."""
        return await self._tether(step_argv(self.tether_bin, self._target, self.site), self.status_timeout)

    def _log_progress(self, result: dict[str, Any], last: list) -> None:
        progress = (result.get("outcome"), result.get("fraction"), result.get("message"), result.get("job_id"))
        if progress == (last[0] if last else None):
            return
        last[:] = [progress]
        self.log.info(
            "tether run %s (job %s): %s%s%s",
            self.run_id,
            result.get("job_id") or "?",
            result.get("outcome") or "running",
            f" {float(progress[1]):.0%}" if progress[1] is not None else "",
            f" {progress[2]}" if progress[2] else "",
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if self.mode == "poll":
            async for ev in self._run_poll():
                yield ev
            return
        errors = 0
        last: list = []
        argv = [self.tether_bin, "watch", "--stdin", *site_args(self.site)]
        while True:
            try:
                w = shared_watch(argv, subprocess_env(self.env))
                ev = await w.wait(self._target, lambda e: self._log_progress(e.get("outcome") or {}, last))
            except (WatchGone, OSError) as e:  # tether cannot run on the triggerer
                ev = {"event": "error", "exit_code": None, "error": f"cannot run {self.tether_bin!r} watch: {e}"}
            rc, result = ev.get("exit_code"), ev.get("outcome")
            if ev.get("event") == "outcome" and rc in FINAL_CODES and result is not None:
                yield TriggerEvent(self._event(rc, result, ""))
                return
            # exit 2 (not found: a triggerer set up unlike the worker), 3
            # (infrastructure), the watch process gone: look again a few
            # times before giving up
            errors += 1
            err = ev.get("error") or "no answer"
            self.log.warning(
                "tether watch %s failed (exit %s, failure %d of at most %d): %s",
                self.run_id, rc, errors, self.max_status_errors + 1, err,
            )
            if errors > self.max_status_errors:
                yield TriggerEvent(self._event(rc, result, err, gave_up=True))
                return
            await asyncio.sleep(self.poll_interval)

    async def _run_poll(self) -> AsyncIterator[TriggerEvent]:
        errors = 0
        last: list = []
        while True:
            rc, out, err = await self._status()
            result = last_json(out)
            if rc == EXIT_NOT_FINISHED:
                errors = 0
                if result:
                    self._log_progress(result, last)
                await asyncio.sleep(self.poll_interval)
                continue
            if rc in FINAL_CODES and result is not None:
                yield TriggerEvent(self._event(rc, result, err))
                return
            # exit 3 (infrastructure), killed by a signal, no JSON, not runnable:
            # maybe transient, so look again a few times before giving up.
            errors += 1
            self.log.warning(
                "tether step %s failed (exit %s, failure %d of at most %d): %s",
                self.run_id,
                rc,
                errors,
                self.max_status_errors + 1,
                (result or {}).get("reason") or _tail(err) or "no output",
            )
            if errors > self.max_status_errors:
                yield TriggerEvent(self._event(rc, result, err, gave_up=True))
                return
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """A user marked the deferred task failed/success or cleared it.

        With cancel_on_kill the run is cancelled and, in watch mode, decided
        too: the triggerer's tether watch sends the cancel, waits for the
        job's end and writes the outcome "cancelled" (within ON_KILL_WAIT
        seconds, inside Airflow's [triggerer] on_kill_timeout of 30 s).
        Without a watch (poll mode, or it cannot run) `tether cancel` sends
        it, and the next acting look (a retry, tether wait, a monitor)
        decides the run."""
        if not self.cancel_on_kill:
            return
        if self.mode == "watch":
            try:
                w = shared_watch([self.tether_bin, "watch", "--stdin", *site_args(self.site)], subprocess_env(self.env))
                waiter = asyncio.ensure_future(w.wait(self._target))
                await asyncio.sleep(0)  # registered before the cancel is sent
                await w.cancel(self._target)
                ev = await asyncio.wait_for(waiter, ON_KILL_WAIT)
                self.log.info(
                    "cancel_on_kill: tether run %s %s (%s)", self.run_id,
                    (ev.get("outcome") or {}).get("outcome") or "not decided",
                    (ev.get("outcome") or {}).get("reason") or ev.get("error") or "",
                )
                return
            except (WatchGone, OSError, TimeoutError, asyncio.TimeoutError) as e:
                self.log.warning("cancel_on_kill through tether watch: %s; running tether cancel", e or "no outcome in time")
        rc, _, err = await self._tether([self.tether_bin, "cancel", self._target, *site_args(self.site)], 25)
        self.log.info("cancel_on_kill: tether cancel %s exited %s %s", self.run_id, rc, _tail(err))

    def _event(self, rc: int | None, result: dict[str, Any] | None, err: str, gave_up: bool = False) -> dict[str, Any]:
        """The trigger's one event. gave_up: the run could not be looked at
        max_status_errors + 1 times; its job may still run, so the operator
        raises a retryable error (the next try reattaches by the key)."""
        ev = {"run_id": self.run_id, "returncode": rc, "result": result, "stderr": _tail(err, 20)}
        if gave_up:
            ev["gave_up"] = True
        return ev


__all__ = ["TetherTrigger"]

