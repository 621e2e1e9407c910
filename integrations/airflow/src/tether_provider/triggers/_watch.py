"""One `tether watch --stdin` process per triggerer, shared by its triggers.

Every deferred TetherTrigger in a triggerer process registers its run with
the same long-lived `tether watch` process (one per event loop, tether
binary, site and environment) and awaits the run's final line. tether watch
waits for all of them at once -- one inotify watcher, one batched scheduler
query per site per interval -- and decides what nobody else decides, so a
thousand deferred tasks cost one process and no process start per poll.
Its "outcome" lines carry the exit code `tether run` would exit with, so the
operator maps them exactly as before.

If the watch process dies, it is started again (with a growing pause) and
every registered run is sent to the new one: watching a decided run gives
its outcome again, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# the longest line tether watch prints (an array run's outcome lists every
# element)
LINE_LIMIT = 64 << 20

# how often the watch process may die in a row before waiters are told
MAX_RESTARTS = 5


class WatchGone(Exception):
    """The watch process keeps dying: the waiters get an error event."""


class _Waiter:
    def __init__(self, on_status: Callable[[dict[str, Any]], None] | None) -> None:
        self.future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.on_status = on_status


class SharedWatch:
    """A `tether watch --stdin` child process and the runs it waits for."""

    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.argv = argv
        self.env = dict(env)
        self.loop = asyncio.get_running_loop()
        self.proc: asyncio.subprocess.Process | None = None
        self.waiters: dict[str, list[_Waiter]] = {}
        self.starts = 0  # processes started (tests and logs)
        self.failures = 0  # consecutive deaths
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> asyncio.subprocess.Process:
        async with self._lock:
            if self.proc is not None and self.proc.returncode is None:
                return self.proc
            if self.failures > MAX_RESTARTS:
                raise WatchGone(f"tether watch exited {self.failures} times in a row")
            if self.failures:
                await asyncio.sleep(min(30.0, 0.5 * 2**self.failures))
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # the triggerer's log
                env=self.env,
                limit=LINE_LIMIT,
            )
            self.starts += 1
            self._reader = asyncio.get_running_loop().create_task(self._read(self.proc))
            # a new process: every run waited for is sent again
            for target in self.waiters:
                await self._send(self.proc, target)
            return self.proc

    async def _send(self, proc: asyncio.subprocess.Process, line: str) -> None:
        if proc.stdin is None or proc.stdin.is_closing():
            return
        proc.stdin.write((line + "\n").encode())
        try:
            await proc.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            pass  # it died: the reader restarts it

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line over LINE_LIMIT
                continue
            if not line:
                break
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if not isinstance(ev, dict):
                continue
            self.failures = 0
            self._dispatch(ev)
        rc = await proc.wait()
        if self.proc is not proc:
            return
        self.failures += 1
        if not self.waiters:
            return
        log.warning("tether watch exited %s with %d runs waited for; starting it again", rc, len(self.waiters))
        try:
            await self._ensure()
        except (WatchGone, OSError) as e:
            for target in list(self.waiters):
                self._resolve(target, {"event": "error", "exit_code": None, "error": f"tether watch: {e}"})

    def _dispatch(self, ev: dict[str, Any]) -> None:
        target = ev.get("run")
        if not isinstance(target, str) or target not in self.waiters:
            return
        if ev.get("event") == "status":
            for w in self.waiters[target]:
                if w.on_status:
                    try:
                        w.on_status(ev)
                    except Exception:  # a logging callback never breaks the watch
                        log.exception("status callback")
            return
        self._resolve(target, ev)

    def _resolve(self, target: str, ev: dict[str, Any]) -> None:
        for w in self.waiters.pop(target, []):
            if not w.future.done():
                w.future.set_result(ev)

    async def wait(self, target: str, on_status: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Wait for the run's final line: {"event": "outcome"|"error",
        "exit_code", "outcome", "error"}."""
        w = _Waiter(on_status)
        first = target not in self.waiters
        self.waiters.setdefault(target, []).append(w)
        try:
            proc = await self._ensure()
            if first:
                await self._send(proc, target)
            return await w.future
        except BaseException:
            # cancelled (the task was cleared, the triggerer stops) or the
            # process cannot start: stop waiting for this run; its job
            # keeps running and the next try reattaches
            ws = self.waiters.get(target, [])
            if w in ws:
                ws.remove(w)
                if not ws:
                    del self.waiters[target]
                    if self.proc is not None and self.proc.returncode is None:
                        await self._send(self.proc, "forget " + target)
            raise

    async def cancel(self, target: str) -> None:
        """Cancel the run through the watch process (its outcome follows)."""
        proc = await self._ensure()
        await self._send(proc, "cancel " + target)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except (TimeoutError, asyncio.TimeoutError):
                self.proc.kill()
                await self.proc.wait()


# one SharedWatch per event loop, argv and environment
_watches: dict[tuple[int, tuple[str, ...], tuple[tuple[str, str], ...]], SharedWatch] = {}


def shared_watch(argv: list[str], env: Mapping[str, str]) -> SharedWatch:
    loop = asyncio.get_running_loop()
    key = (id(loop), tuple(argv), tuple(sorted(env.items())))
    w = _watches.get(key)
    if w is None or w.loop is not loop:  # a new loop at a reused address
        w = _watches[key] = SharedWatch(argv, env)
    return w


def watches() -> list[SharedWatch]:
    """Every shared watch of this process (tests)."""
    return list(_watches.values())
