#!/usr/bin/env bash
# Captures slurmrestd's accounting record of one finished job (what Usage
# reads) from the running test clusters: a job of 2 CPUs holding 150 MB
# for 7 s, submitted with sbatch and read with GET /slurmdb/<v>/job/<id>
# (sacct's own figures are written next to it). Usage: capture-usage.sh
# Writes slurmdb-job-<API version>.json and sacct-usage-<cluster>.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tc=/tmp/tether-testcluster
capture() { # cluster versions...
	local cluster=$1; shift
	(
		. $tc/$cluster/env.sh
		export PATH=$TESTCLUSTER_BIN_DIR:$PATH
		dir=$TESTCLUSTER_SHARED_DIR/capture-usage-$$; mkdir -p "$dir"; trap 'rm -rf "$dir"' EXIT
		id=$(sbatch --parsable -c 2 -t 2 -D "$dir" -o /dev/null --wrap "perl -e 'my \$b = \"x\" x (150 * 1024 * 1024); sleep 7'")
		for _ in $(seq 120); do
			state=$(sacct -n -X -P -j "$id" -o State | head -1)
			case $state in COMPLETED*) break ;; esac
			sleep 1
		done
		sacct -n -P -j "$id" -o JobIDRaw,State,ElapsedRaw,CPUTimeRAW,AllocTRES,MaxRSS,NNodes > "$here/sacct-usage-$cluster.txt"
		tok=$(cut -d= -f2 "$TESTCLUSTER_JWT_FILE")
		for v in "$@"; do
			curl -sf -m 60 -H "X-SLURM-USER-NAME: $TESTCLUSTER_USER" -H "X-SLURM-USER-TOKEN: $tok" \
				"$TESTCLUSTER_REST_URL/slurmdb/$v/job/$id" | python3 -m json.tool > "$here/slurmdb-job-$v.json"
		done
	)
}
capture bookworm v0.0.38
capture trixie v0.0.40 v0.0.41 v0.0.42
