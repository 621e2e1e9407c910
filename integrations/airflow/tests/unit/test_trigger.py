"""TetherTrigger: serialization and the `tether step` polling loop."""

from __future__ import annotations

import asyncio
import signal

import pytest
from airflow.sdk._shared.module_loading import import_string

from tether_provider.triggers.tether import TetherTrigger

from conftest import outcome


def collect(trigger: TetherTrigger, timeout: float = 20) -> list:
    async def go():
        return [e async for e in trigger.run()]

    return asyncio.run(asyncio.wait_for(go(), timeout))


def trig(fake, **kw) -> TetherTrigger:
    """A trigger in poll mode (one `tether step` per look), which the fake
    CLI scripts; watch mode is tested with the real tether (test_watch.py)."""
    kw.setdefault("poll_interval", 0.01)
    kw.setdefault("mode", "poll")
    return TetherTrigger(run_id="analysis-1", tether_bin=str(fake.bin), **kw)


def test_serialize_round_trip():
    t = TetherTrigger(run_id="r", site="cluster", tether_bin="/opt/tether", poll_interval=60, env={"X": "1"},
                      max_status_errors=5)
    classpath, kwargs = t.serialize()
    again = import_string(classpath)(**kwargs)
    assert type(again) is TetherTrigger and again.serialize() == (classpath, kwargs)
    assert kwargs == {"run_id": "r", "site": "cluster", "tether_bin": "/opt/tether", "poll_interval": 60.0,
                      "env": {"X": "1"}, "max_status_errors": 5, "run_dir": None, "status_timeout": 300.0,
                      "cancel_on_kill": False, "mode": "watch"}


def test_looks_the_run_up_by_its_directory(fake):
    """The triggerer may have another TETHER_STATE_DIR/HOME than the worker:
    the run directory from `tether submit` names the run wherever it runs."""
    fake.reply("step", 0, outcome())
    (e,) = collect(trig(fake, run_dir="/shared/state/runs/analysis-1"))
    assert e.payload["returncode"] == 0
    assert fake.argvs() == [["tether", "step", "/shared/state/runs/analysis-1"]]


def test_run_not_found_is_retried_then_reported(fake):
    fake.reply("step", 2, outcome(outcome="error", reason="no run analysis-1"))
    fake.reply("step", 0, outcome())
    (e,) = collect(trig(fake, max_status_errors=1))
    assert e.payload["returncode"] == 0 and len(fake.argvs("step")) == 2
    fake.reply("step", 2, outcome(outcome="error", reason="no run analysis-1"))
    fake.reply("step", 2, outcome(outcome="error", reason="no run analysis-1"))
    (e,) = collect(trig(fake, max_status_errors=1))
    assert e.payload["returncode"] == 2


def test_a_hung_status_call_is_killed_and_counted(fake):
    fake.reply("step", 0, outcome(), sleep=30)
    (e,) = collect(trig(fake, max_status_errors=0, status_timeout=0.5), timeout=10)
    assert e.payload["returncode"] is None and "no answer within 0.5s" in e.payload["stderr"]


def test_on_kill_cancels_only_when_asked(fake):
    fake.reply("cancel", 0, outcome(outcome="cancelled"))
    asyncio.run(trig(fake, run_dir="/s/runs/analysis-1").on_kill())
    assert fake.argvs() == []
    asyncio.run(trig(fake, run_dir="/s/runs/analysis-1", site="cluster", cancel_on_kill=True).on_kill())
    assert fake.argvs() == [["tether", "cancel", "/s/runs/analysis-1", "--site", "cluster"]]


def test_polls_until_finished(fake):
    running = outcome(outcome="running", final=False, proceed=False, fraction=0.5, message="half")
    fake.reply("step", 75, running).reply("step", 75, running).reply("step", 0, outcome())
    events = collect(trig(fake, site="cluster"))
    assert len(events) == 1
    assert events[0].payload == {"run_id": "analysis-1", "returncode": 0, "result": outcome(), "stderr": ""}
    assert fake.argvs() == [["tether", "step", "analysis-1", "--site", "cluster"]] * 3


@pytest.mark.parametrize("rc", [1, 99])
def test_final_codes_end_immediately(fake, rc):
    fake.reply("step", rc, outcome(outcome="x"))
    (e,) = collect(trig(fake))
    assert e.payload["returncode"] == rc and e.payload["result"]["outcome"] == "x"


def test_transient_errors_are_tolerated_then_reported(fake):
    fake.reply("step", 3, stderr="tether: scheduler unreachable\n")
    fake.reply("step", 0, signal=signal.SIGKILL)
    fake.reply("step", 0, stdout="not json\n")  # exit 0 without a JSON line: also an error
    (e,) = collect(trig(fake, max_status_errors=2))
    assert e.payload["returncode"] == 0 and e.payload["result"] is None
    assert len(fake.argvs("step")) == 3


def test_errors_reset_after_a_good_look(fake):
    running = outcome(outcome="running", final=False)
    for r in (3, 75, 3, 75, 3, 75):
        fake.reply("step", r, running if r == 75 else None)
    fake.reply("step", 0, outcome())
    (e,) = collect(trig(fake, max_status_errors=1))
    assert e.payload["returncode"] == 0


def test_killed_status_gives_a_negative_code(fake):
    fake.reply("step", 0, signal=signal.SIGKILL)
    (e,) = collect(trig(fake, max_status_errors=0))
    assert e.payload["returncode"] == -signal.SIGKILL


def test_missing_binary(tmp_path):
    t = TetherTrigger(run_id="r", tether_bin=str(tmp_path / "nope"), poll_interval=0.01, max_status_errors=0)
    (e,) = collect(t)
    assert e.payload["returncode"] is None and "cannot run" in e.payload["stderr"]


def test_env_reaches_tether(fake, tmp_path):
    dump = tmp_path / "env.txt"
    fake.bin.write_text(f'#!/bin/sh\necho "$TETHER_SITE" > {dump}\necho \'{{"outcome":"succeeded"}}\'\n')
    (e,) = collect(trig(fake, env={"TETHER_SITE": "cluster"}))
    assert dump.read_text().strip() == "cluster" and e.payload["returncode"] == 0


def test_cancelled_trigger_kills_its_status_call(fake, tmp_path):
    pidfile = tmp_path / "pid"
    fake.bin.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")

    async def go():
        task = asyncio.ensure_future(trig(fake).run().__anext__())
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
