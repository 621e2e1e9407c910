"""Unit tests: the operator and trigger against a fake `tether` executable.

The fake (fake_tether.py) answers each subcommand (run, submit, status,
list, cancel) from a JSON script of canned replies -- exit code, stdout,
stderr, optionally dying by a signal -- and records every argv, so these
tests need neither the real CLI nor an Airflow database.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Before anything imports airflow: a throwaway AIRFLOW_HOME, no examples.
_home = tempfile.mkdtemp(prefix="tether-airflow-unit-")
os.environ.update(
    {
        "AIRFLOW_HOME": _home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": _home,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home}/airflow.db",
    }
)

FAKE = Path(__file__).with_name("fake_tether.py")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_home, ignore_errors=True)


class FakeTether:
    """A `tether` executable whose replies are scripted per subcommand."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.bin = tmp / "tether"
        self.bin.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.bin.chmod(0o755)
        self.script = tmp / "script.json"
        self.calls = tmp / "calls.jsonl"
        self.env = {"FAKE_TETHER_DIR": str(tmp)}
        self.replies: dict[str, list[dict]] = {}

    def reply(self, command: str, rc: int = 0, result: dict | None = None, stdout: str = "",
              stderr: str = "", signal: int | None = None, sleep: float = 0) -> FakeTether:
        if result is not None:
            stdout += json.dumps(result) + "\n"
        self.replies.setdefault(command, []).append(
            {"rc": rc, "stdout": stdout, "stderr": stderr, "signal": signal, "sleep": sleep}
        )
        self.script.write_text(json.dumps(self.replies))
        return self

    def argvs(self, command: str | None = None) -> list[list[str]]:
        if not self.calls.exists():
            return []
        calls = [json.loads(line) for line in self.calls.read_text().splitlines()]
        if command is None:
            # the operator's best-effort `tether show` for the XCom is left
            # out of the sequence (test_operator checks it on its own)
            return [c for c in calls if not (len(c) > 1 and c[1] == "show")]
        return [c for c in calls if len(c) > 1 and c[1] == command]


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeTether:
    f = FakeTether(tmp_path)
    # the operator/trigger inherit os.environ; the fake finds its script there
    monkeypatch.setenv("FAKE_TETHER_DIR", str(tmp_path))
    return f


def outcome(**kw) -> dict:
    base = {
        "v": 1, "run_id": "analysis-1", "job_id": "7", "site": "local", "backend": "local",
        "outcome": "succeeded", "final": True, "proceed": True, "reason": "completed with exit code 0",
        "exit_code": 0, "scheduler_state": "COMPLETED", "fraction": 1, "attempts": 1,
        "run_dir": "/state/runs/analysis-1", "results": {},
    }
    base.update(kw)
    return base
