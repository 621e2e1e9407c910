#!/usr/bin/env bash
# Captures what FindByTag reads (squeue's comments, sacct's comments and
# working directories) for jobs submitted the way tether submits them: each
# attempt in its own directory <state>/runs/<run id>/attempts/<n>, with the
# tag tether:<run id>:<n> as its comment. Usage, as root on a test cluster:
#   capture-find.sh VERSION [BIN_DIR]
# Writes find-squeue-VERSION.txt, find-sacct-VERSION.txt and
# find-ids-VERSION.txt (run=<run id> attempt1=<job> attempt2=<job> other=<job>).
set -euo pipefail
ver=$1
bin=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
run() { if [ -n "$bin" ]; then "$bin/$1" "${@:2}"; else "$@"; fi; }
work=/tmp/tether-testcluster/shared/capture-find-$ver
rid=capture-$(date -u +%Y%m%dT%H%M%S)-$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p "$work/state/runs/$rid/attempts/1" "$work/state/runs/$rid/attempts/2" "$work/other"
sub() { run sbatch --parsable -o /dev/null -e /dev/null -t 1 "$@" --wrap true | cut -d';' -f1; }
a1=$(sub --chdir="$work/state/runs/$rid/attempts/1" --comment="tether:$rid:1")
a2=$(sub --chdir="$work/state/runs/$rid/attempts/2" --comment="tether:$rid:2")
other=$(sub --chdir="$work/other" --comment="not|tether's")
printf '%s\n' "run=$rid attempt1=$a1 attempt2=$a2 other=$other" > "$here/find-ids-$ver.txt"
for i in $(seq 1 60); do
	[ -z "$(run squeue -h -j "$a1,$a2,$other" -t PENDING,RUNNING,COMPLETING -o %i)" ] && break
	sleep 1
done
run squeue -h -t all --me -O 'JobID:|,Comment:' > "$here/find-squeue-$ver.txt"
# slurmdbd learns of the jobs a moment later, and a window ending now
# leaves out jobs eligible in the current second
q() { run sacct -X -n -P --format=JobID,Comment,WorkDir --starttime=now-3hours; }
for i in $(seq 1 30); do
	[ "$(q | grep -c "/$rid/attempts/")" = 2 ] && [ -n "$(q | grep "^$other|")" ] && break
	sleep 1
done
q > "$here/find-sacct-$ver.txt"
# sacct while slurmdbd cannot be reached: a copy of slurm.conf with a port
# nobody listens on (the cluster is not touched)
if [ -n "$bin" ]; then conf=$("$bin/chroot-exec" cat /etc/slurm/slurm.conf); else conf=$(cat "${SLURM_CONF:-/etc/slurm/slurm.conf}"); fi
printf '%s\n' "$conf" | sed 's|^AccountingStoragePort=.*|AccountingStoragePort=1|' > "$work/nodbd.conf"
printf '%s\n' "$conf" | sed 's|^AccountingStorageType=.*|AccountingStorageType=accounting_storage/none|' > "$work/noacct.conf"
sacct_with() {
	if [ -n "$bin" ]; then "$bin/chroot-exec" env SLURM_CONF="$1" sacct -X -n -P --format=JobID,Comment,WorkDir --starttime=now-3hours
	else SLURM_CONF=$1 sacct -X -n -P --format=JobID,Comment,WorkDir --starttime=now-3hours; fi
}
{ rc=0; sacct_with "$work/nodbd.conf" 2>&1 || rc=$?; echo "# exit $rc"; } > "$here/find-sacct-dbd-down-$ver.txt"
{ rc=0; sacct_with "$work/noacct.conf" 2>&1 || rc=$?; echo "# exit $rc"; } > "$here/find-sacct-no-accounting-$ver.txt"
