#!/usr/bin/env bash
# Captures squeue, sacct and scontrol output for jobs in many states from a
# running test cluster, for the parser tests. Usage:
#   capture.sh VERSION [BIN_DIR]     e.g. capture.sh 22.05   or   capture.sh 24.11 /tmp/tether-testcluster/trixie-bin
# Writes squeue-VERSION.txt, sacct-VERSION.txt, scontrol-VERSION.txt here.
set -euo pipefail
ver=$1
bin=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
run() { if [ -n "$bin" ]; then "$bin/$1" "${@:2}"; else "$@"; fi; }
work=/tmp/tether-testcluster/shared/capture-$ver
mkdir -p "$work" && cd "$work"
sub() { run sbatch --parsable -o /dev/null -e /dev/null "$@" | cut -d';' -f1; }
ok=$(sub --wrap 'true')
fail=$(sub --wrap 'exit 3')
sig=$(sub --wrap 'kill -9 $$')
run_=$(sub --time=5 --wrap 'sleep 120')
held=$(sub -H --wrap 'true')
canc=$(sub --wrap 'sleep 120')
cpend=$(sub -H --wrap 'true')
tmo=$(sub --time=1 --signal=B:USR1@30 --wrap 'trap "echo warned" USR1; sleep 300 & wait; sleep 300')
multi=$(sub -n 2 --comment 'tether:capture-run|with|pipes:1' --wrap 'srun true')
printf '%s\n' "ok=$ok fail=$fail sig=$sig running=$run_ held=$held cancelled_running=$canc cancelled_pending=$cpend timeout=$tmo multi=$multi" > "$here/ids-$ver.txt"
sleep 3
run scancel "$canc"; run scancel "$cpend"
sleep 2
ids=$ok,$fail,$sig,$run_,$held,$canc,$cpend,$tmo,$multi
fmt='JobID:|,State:|,Reason:|,exit_code:|,NodeList:|,SubmitTime:|,StartTime:|,EndTime:|,TimeLimit:|,Comment:'
# now, before MinJobAge purges the finished jobs from the controller
run squeue -h -t all -O "$fmt" -j "$ids" | grep -v "^$tmo|" > "$here/squeue-$ver.txt"
echo "waiting for the timeout job $tmo (Slurm checks limits about every 30 s)" >&2
for i in $(seq 1 150); do
	st=$(run squeue -h -t all -j "$tmo" -o %T 2>/dev/null || true)
	[ "$st" = TIMEOUT ] && break
	sleep 1
done
run squeue -h -t all -O "$fmt" -j "$tmo" >> "$here/squeue-$ver.txt"
run sacct -n -P -X -j "$ids" --format=JobID,State,ExitCode,Reason,NodeList,Submit,Start,End,Timelimit > "$here/sacct-$ver.txt" 2>&1 || true
# scontrol knows only what squeue -t all knows (jobs younger than MinJobAge)
run scontrol show job -o "$tmo" > "$here/scontrol-$ver.txt" || true
run scontrol show job -o "$fail" >> "$here/scontrol-$ver.txt" 2>&1 || true
run scancel "$run_" "$held"
