#!/usr/bin/env bash
# Captures slurmrestd's accounting answers (openapi/slurmdbd) that
# FindByTag reads for jobs the controller has purged, from the running test
# clusters. Run backends/sbatch/testdata/capture-find.sh on each cluster
# first: its jobs (tether-style working directories) are kept, with one
# other job, and the rest is trimmed away. Usage: capture-slurmdb.sh
# Writes slurmdb-jobs-<API version>.json and slurmdb-jobs-empty-v0.0.38.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
get() { # env.sh version path+query
	. "$1"
	local tok; tok=$(cut -d= -f2 "$TESTCLUSTER_JWT_FILE")
	curl -sf -m 60 -H "X-SLURM-USER-NAME: $TESTCLUSTER_USER" -H "X-SLURM-USER-TOKEN: $tok" "$TESTCLUSTER_REST_URL$2"
}
trim() { # keep the jobs of the newest capture-find run and one other job
	python3 -c '
import json, sys
d = json.load(sys.stdin)
jobs = d.get("jobs", [])
runs = sorted({j["working_directory"].split("/runs/")[1].split("/")[0] for j in jobs if "/capture-find-" in j.get("working_directory", "") and "/runs/" in j["working_directory"]})
keep = [j for j in jobs if runs and "/runs/%s/" % runs[-1] in j.get("working_directory", "")]
others = [j for j in jobs if j not in keep]
d["jobs"] = keep + others[-1:]
json.dump(d, sys.stdout, indent=2)
print()'
}
tc=/tmp/tether-testcluster
get $tc/bookworm/env.sh "/slurmdb/v0.0.38/jobs?start_time=now-3hours&skip_steps=true" | trim > "$here/slurmdb-jobs-v0.0.38.json"
get $tc/bookworm/env.sh "/slurmdb/v0.0.38/jobs?start_time=now-1minutes&skip_steps=true&job_name=no-such-job" > "$here/slurmdb-jobs-empty-v0.0.38.json"
for v in v0.0.40 v0.0.41 v0.0.42; do
	get $tc/trixie/env.sh "/slurmdb/$v/jobs/?start_time=now-3hours&skip_steps=true&users=root" | trim > "$here/slurmdb-jobs-$v.json"
done
