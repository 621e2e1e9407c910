"""A real Airflow deployment for tests and benchmarks: api-server, scheduler
(LocalExecutor), dag-processor and triggerer as separate processes on one
throwaway AIRFLOW_HOME with SQLite, as `airflow standalone` runs them, but
each component in its own process group so a test can kill one (the
triggerer, mid-deferral) and start it again.

Used by tests/e2e/test_triggerer.py (the triggerer killed and restarted,
cancel_on_kill of a deferred task) and tests/bench/bench_triggerer.py
(500 deferred tasks on one triggerer).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.2, why: Callable[[], str] | None = None):
    """Call cond until it returns something truthy (returned) or timeout
    seconds pass (AssertionError naming what was awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s" + (f"\n{why()}" if why else ""))
        time.sleep(every)


class Deployment:
    """Airflow's components as child processes.

    :param root: a fresh directory for AIRFLOW_HOME, logs and the tether state.
    :param dags: DAG files linked into the dags folder.
    :param tether_bin: the tether binary (its directory goes first on PATH).
    :param env: more environment for every component (and so for the
        workers' and the triggerer's tether calls).
    :param db_template: an already migrated, empty airflow.db to copy.
    """

    def __init__(
        self,
        root: Path,
        dags: Iterable[Path],
        tether_bin: Path,
        env: dict[str, str] | None = None,
        db_template: str | None = None,
    ) -> None:
        self.root = root
        self.home = root / "airflow"
        self.logs = root / "logs"
        self.state_home = root / "state"
        for d in (self.home / "dags", self.logs, self.state_home):
            d.mkdir(parents=True, exist_ok=True)
        for src in dags:
            (self.home / "dags" / src.name).symlink_to(src)
        self.tether_bin = tether_bin
        self.port = free_port()
        self.db = self.home / "airflow.db"
        bindir = Path(sys.executable).parent
        self.airflow = str(bindir / "airflow")
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k not in ("TETHER_SITE", "TETHER_STATE_DIR")
        }
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
                # throwaway secrets of a throwaway deployment, shared by its components
                "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(24).hex(),
                "AIRFLOW__API__SECRET_KEY": os.urandom(16).hex(),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # quick loops, and a killed triggerer's triggers handed on
                # after 5 s instead of 30
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
                "PYTHONWARNINGS": "ignore",
                "XDG_STATE_HOME": str(self.state_home),
                "PATH": f"{tether_bin.parent}{os.pathsep}{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        self.env.update(env or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = {}
        if db_template and Path(db_template).is_file():
            shutil.copyfile(db_template, self.db)
        else:
            p = subprocess.run([self.airflow, "db", "migrate"], env=self.env, capture_output=True, text=True)
            assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    # ------------------------------------------------------------------ processes
    def start(self, *components: str) -> None:
        for c in components or COMPONENTS:
            n = self.starts.get(c, 0) + 1
            self.starts[c] = n
            log = open(self.logs / f"{c}.{n}.log", "wb")
            self.procs[c] = subprocess.Popen(
                [self.airflow, c], env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: kill() ends its children too
            )
            log.close()
        if "api-server" in (components or COMPONENTS):
            wait_for(self._api_up, 90, "the api-server answers", why=lambda: self.tail("api-server"))

    def kill(self, component: str, sig: int = signal.SIGKILL) -> None:
        """End a component and every process of its group (as a host's
        crash would), and wait for it."""
        p = self.procs.pop(component)
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def stop(self) -> None:
        for c in list(self.procs):
            p = self.procs[c]
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        for c in list(self.procs):
            p = self.procs.pop(c)
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # whatever of the group is left
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()

    def pid(self, component: str) -> int:
        return self.procs[component].pid

    def group(self, component: str) -> list[int]:
        """The live processes of a component's process group."""
        pg = self.procs[component].pid
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if os.getpgid(int(d.name)) == pg:
                        out.append(int(d.name))
                except ProcessLookupError:
                    pass
        return out

    def tail(self, component: str, n: int = 40) -> str:
        k = self.starts.get(component, 1)
        f = self.logs / f"{component}.{k}.log"
        lines = f.read_text(errors="replace").splitlines() if f.exists() else []
        return f"--- {f.name}\n" + "\n".join(lines[-n:])

    # ------------------------------------------------------------------ API and DB
    def _api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _token(self) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/auth/token", method="GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)["access_token"]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v2{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token()}"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def query(self, sql: str, *args: Any) -> list[tuple]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "no such table" in str(e):
                return []
            raise
        finally:
            con.close()

    def wait_parsed(self, *dag_ids: str, timeout: float = 120) -> None:
        def parsed():
            have = {r[0] for r in self.query("SELECT dag_id FROM dag WHERE is_stale = 0")}
            return set(dag_ids) <= have

        wait_for(parsed, timeout, f"the dag-processor parses {dag_ids}", every=0.5, why=lambda: self.tail("dag-processor"))

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        got = self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return got["dag_run_id"]

    def tis(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        rows = self.query(
            "SELECT task_id, map_index, state, try_number, end_date, scheduled_dttm FROM task_instance"
            " WHERE dag_id=? AND run_id=?",
            dag_id, run_id,
        )
        return {
            (t if mi < 0 else f"{t}[{mi}]"): {"state": s, "try_number": n, "end_date": e, "scheduled_dttm": sd}
            for t, mi, s, n, e, sd in rows
        }

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id=? AND run_id=?", dag_id, run_id)
        return rows[0][0] if rows else None

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND key=?", dag_id, run_id, task_id, key
        )
        if not rows:
            return None
        v = rows[0][0]
        v = json.loads(v) if isinstance(v, (str, bytes)) else v
        return json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v

    def trigger_log(self, dag_id: str, run_id: str, task_id: str = "work", try_number: int = 1) -> str:
        """What the task's triggers logged (every triggerer's file)."""
        d = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "".join(f.read_text(errors="replace") for f in sorted(d.glob(f"attempt={try_number}.log.trigger.*.log")))

    def tether(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.tether_bin), *args], env=self.env, capture_output=True, text=True, check=False)
