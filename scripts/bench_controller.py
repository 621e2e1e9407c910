"""What a workflow tool costs slurmctld, and how soon it notices a job's end.

Issue 17's table, rerun side by side: 50 one-CPU jobs of 30 to 57 s on the
Slurm 22.05 test cluster (32 slots, so two waves), every tool waiting on
all 50. Status RPCs are slurmctld's own count (sdiag: REQUEST_JOB_INFO,
REQUEST_JOB_INFO_SINGLE, REQUEST_JOB_STATE) over the tool's measurement;
"notice" is the time from the job's last act (it writes the time to a file
as it ends) to the tool reporting the job done.

Run by scripts/bench-controller.sh; arguments: TETHER_BIN SITE_FILE OUT_DIR.
Nothing else may use the cluster meanwhile (sdiag counts every client).
"""

import datetime
import os
import pathlib
import re
import statistics
import subprocess
import sys
import threading
import time

JOBS = 50


def lengths():
    return [30 + (i * 27) // (JOBS - 1) for i in range(JOBS)]


def status_rpcs():
    out = subprocess.run(["sdiag"], check=True, capture_output=True, text=True).stdout
    n = 0
    for m in re.finditer(r"^\s*(REQUEST_JOB_INFO|REQUEST_JOB_INFO_SINGLE|REQUEST_JOB_STATE)\s+\(\s*\d+\)\s+count:(\d+)", out, re.M):
        n += int(m.group(2))
    return n


def job_command(out, i, n):
    return f"sleep {n}; date +%s.%N > {out}/end-{i}"


def ended_at(out, i):
    with open(f"{out}/end-{i}") as f:
        return float(f.read().strip())


def bench_tether(tether, site, out):
    env = dict(os.environ, TETHER_SITE=site, TETHER_STATE_DIR=f"{out}/state")
    runs = []
    for i, n in enumerate(lengths()):
        spec = f"{out}/job{i}.toml"
        with open(spec, "w") as f:
            f.write(f"name = 'bench{i}'\ncommand = ['bash', '-c', '{job_command(out, i, n)}']\n[resources]\nwalltime = '5m'\n")
        r = subprocess.run([tether, "submit", spec], check=True, capture_output=True, text=True, env=env, cwd=out)
        runs.append(re.search(r'"run_id":"([^"]+)"', r.stdout).group(1))
    noticed = [0.0] * JOBS

    def wait(i):
        subprocess.run([tether, "wait", runs[i]], capture_output=True, env=env, cwd=out)
        noticed[i] = time.time()

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(JOBS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [noticed[i] - ended_at(out, i) for i in range(JOBS)]


def bench_psij(interval, out):
    import psij
    from psij.executors.batch.slurm import SlurmExecutorConfig

    ex = psij.JobExecutor.get_instance("slurm", config=SlurmExecutorConfig(queue_polling_interval=interval, work_directory=pathlib.Path(out) / "psij"))
    noticed = [0.0] * JOBS
    done = threading.Semaphore(0)
    jobs = []
    for i, n in enumerate(lengths()):
        spec = psij.JobSpec(executable="/bin/bash", arguments=["-c", job_command(out, i, n)], directory=out,
                            attributes=psij.JobAttributes(queue_name="debug", duration=datetime.timedelta(minutes=5)))
        job = psij.Job(spec)

        def cb(job, status, i=i):
            if status.final and noticed[i] == 0:
                noticed[i] = time.time()
                done.release()

        job.set_job_status_callback(cb)
        ex.submit(job)
        jobs.append(job)
    for _ in range(JOBS):
        done.acquire()
    return [noticed[i] - ended_at(out, i) for i in range(JOBS)]


def measure(name, fn, out):
    os.makedirs(out, exist_ok=True)
    before, t0 = status_rpcs(), time.time()
    lags = fn(out)
    minutes = (time.time() - t0) / 60
    rpcs = status_rpcs() - before
    lags.sort()
    return (name, rpcs / minutes, lags[0], statistics.median(lags), lags[-1])


def main():
    tether, site, out = sys.argv[1:4]
    print(f"{JOBS} jobs of 30-57 s, 32 slots, Slurm 22.05 test cluster, {datetime.date.today()}")
    print("| tool | slurmctld status RPCs per minute | job end -> tool notices (min / median / max) |")
    print("|---|---|---|", flush=True)
    for name, fn, sub in [
        ("tether (Slurm defaults: poll 2-30 s, 10 queries/min)", lambda o: bench_tether(tether, site, o), "tether"),
        ("PSI/J 0.9.11, default 30 s", lambda o: bench_psij(30, o), "psij30"),
        ("PSI/J 0.9.11 at 5 s", lambda o: bench_psij(5, o), "psij5"),
    ]:
        name, per_min, lo, med, hi = measure(name, fn, f"{out}/{sub}")
        print(f"| {name} | {per_min:.1f} | {lo:.2f} / {med:.2f} / {hi:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
