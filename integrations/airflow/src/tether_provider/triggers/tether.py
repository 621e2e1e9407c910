"""TetherTrigger: waits for a submitted tether run in the triggerer.

It runs `tether status RUN` (one look, exit 75 while the run is not finished)
every `poll_interval` seconds as an asyncio subprocess, so a 12-hour job holds
no worker slot. The triggerer needs the `tether` binary, the site file and
access to the site's state directory, just like the workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from tether_provider._cli import EXIT_NOT_FINISHED, _tail, last_json, status_argv, subprocess_env

# Exit codes of `tether status` that are a decision, not a hiccup:
# 0 proceed, 1 failed/cancelled, 99 skipped, 2 unknown run / bad input.
FINAL_CODES = frozenset({0, 1, 2, 99})


class TetherTrigger(BaseTrigger):
    """Poll `tether status RUN` until the run has an outcome.

    Emits one TriggerEvent with ``{"returncode", "result", "stderr", "run_id"}``:
    the exit code and parsed JSON of the last `tether status` call, which the
    operator maps exactly like the exit code of `tether run`.

    :param run_id: the run id printed by `tether submit`.
    :param site: site name or path (None: $TETHER_SITE, else the local site).
    :param tether_bin: the tether executable on the triggerer.
    :param poll_interval: seconds between two looks.
    :param env: extra environment variables for tether.
    :param max_status_errors: consecutive failed looks (exit 3, a signal,
        no JSON) tolerated before giving up with a retryable error.
    """

    def __init__(
        self,
        run_id: str,
        site: str | None = None,
        tether_bin: str = "tether",
        poll_interval: float = 30.0,
        env: dict[str, str] | None = None,
        max_status_errors: int = 3,
    ) -> None:
        super().__init__()
        self.run_id = run_id
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
            },
        )

    async def _status(self) -> tuple[int | None, str, str]:
        """One `tether status` call: (returncode, stdout, stderr)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *status_argv(self.tether_bin, self.run_id, self.site),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=subprocess_env(self.env),
            )
        except OSError as e:  # tether not found / not executable on the triggerer
            return None, "", f"cannot run {self.tether_bin!r}: {e}"
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            # The trigger is being cancelled (task cleared, triggerer stopping):
            # don't leave a half-finished `tether status` behind. The job itself
            # keeps running; the next try reattaches to it by its key.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    async def run(self) -> AsyncIterator[TriggerEvent]:
        errors = 0
        last_progress: tuple[Any, Any, Any] | None = None
        while True:
            rc, out, err = await self._status()
            result = last_json(out)
            if rc == EXIT_NOT_FINISHED:
                errors = 0
                if result:
                    progress = (result.get("outcome"), result.get("fraction"), result.get("message"))
                    if progress != last_progress:
                        last_progress = progress
                        self.log.info(
                            "tether run %s (job %s): %s%s%s",
                            self.run_id,
                            result.get("job_id") or "?",
                            result.get("outcome") or "running",
                            f" {float(progress[1]):.0%}" if progress[1] is not None else "",
                            f" {progress[2]}" if progress[2] else "",
                        )
                await asyncio.sleep(self.poll_interval)
                continue
            if rc in FINAL_CODES and result is not None:
                yield TriggerEvent(self._event(rc, result, err))
                return
            # exit 3 (infrastructure), killed by a signal, no JSON, not runnable:
            # maybe transient, so look again a few times before giving up.
            errors += 1
            self.log.warning(
                "tether status %s failed (exit %s, %d/%d): %s",
                self.run_id,
                rc,
                errors,
                self.max_status_errors + 1,
                (result or {}).get("reason") or _tail(err) or "no output",
            )
            if errors > self.max_status_errors:
                yield TriggerEvent(self._event(rc, result, err))
                return
            await asyncio.sleep(self.poll_interval)

    def _event(self, rc: int | None, result: dict[str, Any] | None, err: str) -> dict[str, Any]:
        return {"run_id": self.run_id, "returncode": rc, "result": result, "stderr": _tail(err, 20)}


__all__ = ["TetherTrigger"]

