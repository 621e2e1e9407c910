#!/usr/bin/env bash
# Captures what sbatch prints when a submit fails, for the classification
# tests (definite refusal -> ErrRejected, anything else -> ErrUnavailable).
# Usage, as root on a running test cluster:
#   capture-errors.sh VERSION [BIN_DIR]    e.g. capture-errors.sh 22.05
#                                          or   capture-errors.sh 24.11 /path/to/testcluster/trixie-bin
# Writes sbatch-errors-VERSION.txtar here: one file per case, named after the
# case, holding sbatch's (or for scancel-* cases scancel's) stderr and exit
# status. A request the cluster
# accepts (no accounting enforcement, so a bad account or QOS is accepted)
# is cancelled and left out. The outage cases use a copy of slurm.conf
# pointing at a munge socket or a slurmctld port that do not exist; the
# running cluster is not touched.
set -uo pipefail
ver=$1
bin=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
work=/tmp/tether-testcluster/shared/capture-errors-$ver
mkdir -p "$work" && cd "$work" || exit 1
printf '#!/bin/bash\ntrue\n' > job.sh
# the cluster's slurm.conf, as the commands see it
if [ -n "$bin" ]; then
	conf=$("$bin/chroot-exec" cat /etc/slurm/slurm.conf)
	sb() { "$bin/chroot-exec" env ${CONF:+SLURM_CONF=$CONF} sbatch "$@"; }
	sc() { "$bin/chroot-exec" env ${CONF:+SLURM_CONF=$CONF} scancel "$@"; }
	sq() { "$bin/squeue" "$@"; }
	cancel() { "$bin/scancel" "$@"; }
else
	conf=$(cat "${SLURM_CONF:-/etc/slurm/slurm.conf}")
	sb() { env ${CONF:+SLURM_CONF=$CONF} sbatch "$@"; }
	sc() { env ${CONF:+SLURM_CONF=$CONF} scancel "$@"; }
	sq() { squeue "$@"; }
	cancel() { scancel "$@"; }
fi
printf '%s\n' "$conf" | sed 's|^AuthInfo=.*|AuthInfo=socket=/nonexistent/munge.socket|' > "$work/nomunge.conf"
printf '%s\n' "$conf" | sed 's|^SlurmctldPort=.*|SlurmctldPort=1|' > "$work/noctld.conf"
out=$here/sbatch-errors-$ver.txtar
{
	echo "sbatch's stderr for failed submits on Slurm $ver ($(sb --version)), captured by capture-errors.sh."
	echo "Each file: the case, then stderr, then the exit status."
} > "$out"
case_() {
	local name=$1; shift
	local err rc
	err=$(sb --parsable --chdir="$work" --output=/dev/null "$@" "$work/job.sh" 2>&1 >"$work/stdout")
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "$name: accepted (job $(cut -d';' -f1 "$work/stdout")), left out" >&2
		cancel "$(cut -d';' -f1 "$work/stdout")"
		return
	fi
	printf -- '-- %s --\n# sbatch %s\n%s\n# exit %d\n' "$name" "$*" "$err" "$rc" >> "$out"
}
# definite refusals
case_ partition -t 1 -p nosuch
case_ timelimit -p short -t 10
case_ ntasks -t 1 -n 200
case_ cpus-per-task -t 1 --cpus-per-task=64
case_ nodes -t 1 -N 5
case_ memory -t 1 --mem=999999
case_ tmp -t 1 --tmp=99999999
case_ feature -t 1 -C nosuch
case_ gres -t 1 --gres=foo:1
case_ gpus -t 1 --gpus-per-task=1
case_ reservation -t 1 --reservation=nosuch
case_ exclude -t 1 --exclude=nosuchnode
case_ nodelist -t 1 --nodelist=nosuchnode
case_ licenses -t 1 --licenses=foo:1
case_ account -t 1 --account=nosuch
case_ qos -t 1 --qos=nosuch
case_ option -t 1 --no-such-option
case_ time-spec -t abc
case_ signal-spec -t 1 --signal=B:NOSUCH@10
# outages
CONF=$work/nomunge.conf case_ munge-down -t 1
CONF=$work/noctld.conf case_ ctld-down -t 1
# scancel of a job that ended (still in the controller), of one it never
# knew, and during the outages
sc_case() {
	local name=$1; shift
	local err rc
	err=$(sc "$@" 2>&1 >/dev/null)
	rc=$?
	printf -- '-- %s --\n# scancel %s\n%s\n# exit %d\n' "$name" "$*" "$err" "$rc" >> "$out"
}
done_id=$(sb --parsable --chdir="$work" --output=/dev/null -t 1 --wrap true | cut -d';' -f1)
for i in $(seq 1 30); do
	[ "$(CONF= sq -h -t all -j "$done_id" -o %T)" = COMPLETED ] && break
	sleep 1
done
sc_case scancel-ended "$done_id"
sc_case scancel-unknown 99999999
sc_case scancel-unknown-verbose -v 99999999
CONF=$work/nomunge.conf sc_case scancel-munge-down 99999999
CONF=$work/noctld.conf sc_case scancel-ctld-down 99999999
echo "wrote $out" >&2
