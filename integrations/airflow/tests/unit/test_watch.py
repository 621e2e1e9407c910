"""TetherTrigger in watch mode against the real tether binary (local site):
one shared `tether watch` process for all the triggers of an event loop."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from tether_provider.triggers import _watch
from tether_provider.triggers.tether import TetherTrigger

REPO = Path(__file__).resolve().parents[4]
TETHER = Path(os.environ.get("TETHER_BIN") or REPO / "bin" / "tether")


@pytest.fixture
def tether(tmp_path, monkeypatch):
    """A tether on the local site, in its own state directory, behind a
    wrapper that logs every process start."""
    if not TETHER.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{TETHER} is missing (make build)")
        pytest.skip(f"{TETHER} is missing (make build)")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for v in ("TETHER_SITE", "TETHER_STATE_DIR"):
        monkeypatch.delenv(v, raising=False)
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "tether"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {TETHER} "$@"\n')
    wrapper.chmod(0o755)

    class T:
        bin = str(wrapper)
        dir = tmp_path

        @staticmethod
        def submit(script: str, name: str = "t") -> dict:
            task = tmp_path / f"{name}.toml"
            task.write_text(f'name = "{name}"\nscript = \'\'\'\n{script}\n\'\'\'\n')
            out = subprocess.run([str(TETHER), "submit", str(task)], capture_output=True, text=True, cwd=tmp_path)
            return json.loads(out.stdout.strip().splitlines()[-1])

        @staticmethod
        def starts(sub: str) -> int:
            if not calls.exists():
                return 0
            return sum(1 for ln in calls.read_text().splitlines() if ln.split(" ")[0] == sub)

    return T


def trigger(t, run: dict, **kw) -> TetherTrigger:
    kw.setdefault("poll_interval", 0.2)
    return TetherTrigger(run_id=run["run_id"], run_dir=run["run_dir"], tether_bin=t.bin, **kw)


async def first_event(trig: TetherTrigger):
    async for ev in trig.run():
        return ev


async def close_watches():
    for w in _watch.watches():
        if w.loop is asyncio.get_running_loop():
            await w.close()


def test_twenty_deferred_runs_one_process(tether):
    """20 triggers waiting over many poll intervals start ONE tether
    process (tether watch), not one `tether step` per run per poll."""
    runs = [tether.submit(f"sleep 0.{i % 10}; sleep 2; tether report --result i={i}", name=f"r{i}") for i in range(20)]

    async def go():
        evs = await asyncio.wait_for(asyncio.gather(*[first_event(trigger(tether, r)) for r in runs]), 60)
        await close_watches()
        return evs

    evs = asyncio.run(go())
    assert [e.payload["returncode"] for e in evs] == [0] * 20
    assert [e.payload["result"]["results"]["i"] for e in evs] == [str(i) for i in range(20)]
    assert [e.payload["run_id"] for e in evs] == [r["run_id"] for r in runs]
    # the runs took over 2 s: more than 10 poll intervals of 0.2 s
    assert tether.starts("watch") == 1 and tether.starts("step") == 0


def test_failure_skip_and_a_run_that_cannot_be_found(tether):
    bad = tether.submit("exit 3", name="bad")
    gone = {"run_id": "gone-1", "run_dir": str(tether.dir / "nowhere" / "gone-1")}

    async def go():
        evs = await asyncio.gather(first_event(trigger(tether, bad)),
                                   first_event(trigger(tether, gone, max_status_errors=1, poll_interval=0.05)))
        await close_watches()
        return evs

    failed, lost = asyncio.run(asyncio.wait_for(go(), 60))
    assert failed.payload["returncode"] == 1 and failed.payload["result"]["outcome"] == "failed"
    # not found twice: the trigger gives up, marked so that the operator
    # raises a retryable error (the job may still run)
    assert lost.payload["returncode"] == 2 and lost.payload.get("gave_up") is True
    assert "no such run" in lost.payload["stderr"] or "has no run.json" in lost.payload["stderr"]


def test_the_watch_process_is_started_again_when_it_dies(tether):
    run = tether.submit('until [ -e "$HOME/go" ]; do sleep 0.1; done', name="slow")

    async def go():
        task = asyncio.ensure_future(first_event(trigger(tether, run)))
        for _ in range(300):
            ws = [w for w in _watch.watches() if w.loop is asyncio.get_running_loop() and w.proc]
            if ws and run["run_dir"] in ws[0].waiters:
                break
            await asyncio.sleep(0.02)
        w = ws[0]
        w.proc.kill()  # the watch process dies mid-deferral
        for _ in range(300):
            if w.starts == 2 and w.proc.returncode is None:
                break
            await asyncio.sleep(0.02)
        (tether.dir / "go").touch()
        ev = await asyncio.wait_for(task, 60)
        starts = w.starts
        await close_watches()
        return ev, starts

    ev, starts = asyncio.run(go())
    assert ev.payload["returncode"] == 0 and starts == 2


def test_a_cancelled_trigger_forgets_its_run(tether):
    run = tether.submit("sleep 30", name="long")

    async def go():
        task = asyncio.ensure_future(first_event(trigger(tether, run)))
        for _ in range(300):
            ws = [w for w in _watch.watches() if w.loop is asyncio.get_running_loop() and w.proc]
            if ws and run["run_dir"] in ws[0].waiters:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        waiting = dict(ws[0].waiters)
        alive = ws[0].proc.returncode is None
        await close_watches()
        return waiting, alive

    waiting, alive = asyncio.run(go())
    assert waiting == {} and alive
    # the job itself keeps running: the next try reattaches by its key
    st = subprocess.run([str(TETHER), "status", run["run_id"]], capture_output=True, text=True)
    assert st.returncode == 75


def test_on_kill_in_watch_mode_cancels_and_decides(tether):
    """cancel_on_kill on a deferred task: Airflow cancels the trigger (a
    user's mark failed), then calls on_kill, which has the shared tether
    watch cancel the job and decide the run: its outcome is "cancelled"
    when on_kill returns, with no other tether process started."""
    run = tether.submit("sleep 60", name="killed")

    async def go():
        trig = trigger(tether, run, cancel_on_kill=True)
        task = asyncio.ensure_future(first_event(trig))
        for _ in range(300):
            ws = [w for w in _watch.watches() if w.loop is asyncio.get_running_loop() and w.proc]
            if ws and run["run_dir"] in ws[0].waiters:
                break
            await asyncio.sleep(0.02)
        task.cancel()  # what the triggerer does first
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(trig.on_kill(), 30)
        await close_watches()

    asyncio.run(go())
    st = subprocess.run([str(TETHER), "status", run["run_id"]], capture_output=True, text=True)
    assert st.returncode == 1, st.stdout + st.stderr
    assert json.loads(st.stdout.strip().splitlines()[-1])["outcome"] == "cancelled"
    assert tether.starts("watch") == 1 and tether.starts("cancel") == 0
