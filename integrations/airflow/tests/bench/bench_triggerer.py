"""Benchmark: N deferred TetherOperator tasks on one real `airflow triggerer`
(a real deployment: tests/deployment.py), the shared `tether watch` (watch
mode) against one `tether step` per run per poll (poll mode, the trigger as
it was), one after the other on the same machine in the same run.

For each mode:
  1. N mapped tasks defer; their Tasks (local backend) wait at a gate (a
     blocked flock: no CPU), so every job is still running while
  2. the triggerer is measured at steady state for --window seconds: CPU
     of its process group (the supervisor, the trigger runner and their
     children: tether watch, or every tether step it started), the sum of
     their RSS, and the processes it started (counted by the kernel's
     process accounting: exited children of its processes);
  3. the gate opens: the Tasks sleep 60-180 s (staggered by index) and end;
     per task, job end (the wrapper's exit file) -> trigger event (the
     task instance's scheduled_dttm, set when the trigger's event is
     submitted) and -> task success (its end_date, after Airflow resumed
     it on a worker).

Targets (issue 21): under 5 % of one core at steady state, no process
start per run per poll, median job end -> task success <= 2 s.

Usage: bench_triggerer.py [--tasks N] [--window S] [--modes watch,poll]
Run by scripts/bench-triggerer.sh (make bench).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from deployment import Deployment, wait_for  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def group_cpu(d: Deployment, component: str) -> dict[int, tuple[str, float, float]]:
    """pid -> (what, CPU seconds with reaped children, RSS MB) of every
    process of a component's process group."""
    out = {}
    for pid in d.group(component):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = sum(int(x) for x in f[11:15]) / TICK  # utime stime cutime cstime
            rss = 0.0
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            what = " ".join(a for a in argv[:3] if a and not a.startswith("/"))
            out[pid] = (Path(argv[0]).name + " " + what if argv[0].startswith("/") else what, cpu, rss)
        except (OSError, IndexError, ValueError):
            pass
    return out


class ProcessAccounting:
    """The kernel's process accounting (acct(2), root only) over a window:
    one record per process that exits, with its parent's pid, so the
    processes a set of parents started can be counted exactly (a fork
    counter would count threads and the whole machine)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.ok = False

    def __enter__(self) -> ProcessAccounting:
        self.path.write_bytes(b"")
        self.ok = os.geteuid() == 0 and self.libc.acct(str(self.path).encode()) == 0
        return self

    def __exit__(self, *exc) -> None:
        if self.ok:
            self.libc.acct(None)

    def children_of(self, parents: set[int]) -> list[str]:
        """Command names of the exited processes whose parent is in parents."""
        b = self.path.read_bytes() if self.ok else b""
        out = []
        for i in range(0, len(b) - 63, 64):  # struct acct_v3
            rec = b[i:i + 64]
            if rec[1] != 3:
                continue
            ppid = struct.unpack_from("<I", rec, 20)[0]
            if ppid in parents:
                out.append(rec[48:64].split(b"\0")[0].decode(errors="replace"))
        return out


def ts(v) -> float | None:
    if not v:
        return None
    t = datetime.fromisoformat(str(v).replace(" ", "T").replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()  # Airflow's DB times are UTC


def one_mode(d: Deployment, mode: str, n: int, window: float, work: Path) -> dict:
    dag = f"bench_defer_{mode}"
    task_dir = work / mode
    task_dir.mkdir()
    shutil.copy(HERE / "hold.toml", task_dir)
    gate = open(task_dir / "gate", "w")
    fcntl.flock(gate, fcntl.LOCK_EX)  # the Tasks wait here
    d.start("triggerer")
    t0 = time.monotonic()
    run_id = d.trigger(dag, {"task_dir": str(task_dir)})

    def states() -> dict[str, int]:
        out: dict[str, int] = {}
        for ti in d.tis(dag, run_id).values():
            out[ti["state"] or "none"] = out.get(ti["state"] or "none", 0) + 1
        return out

    def all_deferred():
        s = states()
        running = d.query(
            "SELECT count(*) FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id"
            " WHERE ti.dag_id = ? AND ti.run_id = ? AND t.triggerer_id IS NOT NULL", dag, run_id)
        return s.get("deferred", 0) == n and running and running[0][0] == n

    def progress():
        return f"{states()}\n{d.tail('scheduler', 10)}\n{d.tail('triggerer', 10)}"

    wait_for(all_deferred, 3600, f"{mode}: {n} tasks deferred and their triggers running", every=2, why=progress)
    ramp = time.monotonic() - t0
    print(f"{mode}: {n} tasks deferred in {ramp:.0f}s", file=sys.stderr)
    time.sleep(min(15.0, window / 4))  # past the triggers' first looks: steady state
    before = group_cpu(d, "triggerer")
    w0 = time.monotonic()
    with ProcessAccounting(work / f"acct.{mode}") as acct:
        time.sleep(window)
        after = group_cpu(d, "triggerer")
        w1 = time.monotonic()
    minutes = (w1 - w0) / 60
    cpu = sum(c for _, c, _ in after.values()) - sum(c for _, c, _ in before.values())
    per = {}
    for pid, (what, c, _) in after.items():
        per[what] = round(per.get(what, 0) + c - before.get(pid, (what, 0.0, 0.0))[1], 2)
    started = acct.children_of(set(before) | set(after))
    steady = {
        "cpu_s_per_min": round(cpu / minutes, 2),
        "cpu_pct_of_one_core": round(100 * cpu / (w1 - w0), 2),
        "cpu_s_by_process": per,
        "rss_mb": round(sum(r for _, _, r in after.values()), 1),
        "processes": len(after),
        "process_starts_per_min": round(len(started) / minutes, 1) if acct.ok else None,
        "tether_starts_per_min": round(sum(1 for c in started if c.startswith("tether")) / minutes, 1)
        if acct.ok else None,
    }
    print(f"{mode}: steady state {steady}", file=sys.stderr)
    # open the gate: the jobs end over the next 60-180 s
    fcntl.flock(gate, fcntl.LOCK_UN)
    gate.close()
    wait_for(lambda: d.run_state(dag, run_id) in ("success", "failed"), 1800, f"{mode}: the DAG run ends", every=2,
             why=progress)
    final = states()
    runs = {r["key"]: r for r in json.loads(d.tether("list", "--json").stdout) if r.get("key", "").startswith(
        f"airflow/{dag}/")}
    to_event, to_success = [], []
    for name, ti in d.tis(dag, run_id).items():
        mi = name.rsplit("[", 1)[1].rstrip("]")
        r = runs.get(f"airflow/{dag}/{run_id}/work/{mi}")
        if not r:
            continue
        try:
            exit_time = ts(json.loads((Path(r["run_dir"]) / "attempts" / "1" / "exitcode").read_text())["time"])
        except (OSError, ValueError, KeyError):
            continue
        if (ev := ts(ti["scheduled_dttm"])) is not None:
            to_event.append(ev - exit_time)
        if (end := ts(ti["end_date"])) is not None and ti["state"] == "success":
            to_success.append(end - exit_time)
    d.kill("triggerer", 15)

    def stats(xs: list[float]) -> dict:
        if not xs:
            return {}
        return {"median_s": round(statistics.median(xs), 2), "max_s": round(max(xs), 2), "n": len(xs)}

    return {
        "mode": mode,
        "tasks": n,
        "ramp_s": round(ramp),
        "steady": steady,
        "states": final,
        "job_end_to_trigger_event": stats(to_event),
        "job_end_to_task_success": stats(to_success),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=int(os.environ.get("TETHER_BENCH_TASKS", "500")))
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--modes", default="watch,poll")
    ap.add_argument("--sleep", default="60,120", help="BASE,SPAN: the Tasks sleep BASE + I*SPAN/N s after the gate")
    ap.add_argument("--tether", default=os.environ.get("TETHER_BIN", str(HERE.parents[3] / "bin" / "tether")))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tether-bench-triggerer-"))
    d = Deployment(
        work / "deployment",
        (HERE / "dags").glob("*.py"),
        Path(args.tether).resolve(),
        env={
            "TETHER_BENCH_TASKS": str(args.tasks),
            "TETHER_BENCH_SLEEP": args.sleep,
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(args.tasks),
            "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, args.tasks)),
            # Airflow's defaults, not the tests' quick hand-over
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "30",
        },
    )
    results = []
    try:
        d.start("api-server", "scheduler", "dag-processor")
        d.wait_parsed(*(f"bench_defer_{m}" for m in args.modes.split(",")))
        for mode in args.modes.split(","):
            results.append(one_mode(d, mode, args.tasks, args.window, work))
            print(json.dumps(results[-1]), flush=True)
    finally:
        d.stop()
        if not os.environ.get("TETHER_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)
    if len(results) == 2:
        a, b = results
        print(
            f"triggerer, {args.tasks} deferred tasks: {a['mode']} vs {b['mode']}: "
            f"CPU {a['steady']['cpu_pct_of_one_core']}% vs {b['steady']['cpu_pct_of_one_core']}% of one core, "
            f"RSS {a['steady']['rss_mb']} vs {b['steady']['rss_mb']} MB, "
            f"process starts/min {a['steady']['process_starts_per_min']} vs {b['steady']['process_starts_per_min']}, "
            f"job end -> task success median {a['job_end_to_task_success'].get('median_s')} vs "
            f"{b['job_end_to_task_success'].get('median_s')} s (max {a['job_end_to_task_success'].get('max_s')} vs "
            f"{b['job_end_to_task_success'].get('max_s')}), job end -> trigger event median "
            f"{a['job_end_to_trigger_event'].get('median_s')} vs {b['job_end_to_trigger_event'].get('median_s')} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
