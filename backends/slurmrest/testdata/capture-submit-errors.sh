#!/usr/bin/env bash
# Captures slurmrestd's answers to job submits that Slurm refuses, from the
# running test clusters (22.05 v0.0.38, 24.11 v0.0.42), for the
# classification tests. Requests that are accepted are cancelled and left
# out. Usage: capture-submit-errors.sh
# Writes submit-errors-<API version>.txtar: one file per case holding the
# HTTP status and the body.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tc=/tmp/tether-testcluster
dir=$tc/shared/capture-rest-errors
mkdir -p "$dir"
capture() { # cluster version
	. "$tc/$1/env.sh"
	local v=$2 tok out
	tok=$(cut -d= -f2 "$TESTCLUSTER_JWT_FILE")
	out=$here/submit-errors-$v.txtar
	echo "slurmrestd $v ($TESTCLUSTER_SLURM_RELEASE) answers to refused submits, captured by capture-submit-errors.sh." > "$out"
	one() { # name, jq-style python edit of the job description
		local name=$1 edit=$2 body status
		body=$(python3 -c '
import json, sys
v, d, edit = sys.argv[1], sys.argv[2], sys.argv[3]
job = {"name": "capture-rest-errors", "partition": "debug", "tasks": 1, "current_working_directory": d,
       "standard_output": "/dev/null"}
if v == "v0.0.38":
    job["time_limit"] = 1; job["environment"] = {"PATH": "/usr/bin:/bin"}
else:
    job["time_limit"] = {"set": True, "infinite": False, "number": 1}; job["environment"] = ["PATH=/usr/bin:/bin"]
exec(edit)
print(json.dumps({"script": "#!/bin/bash\ntrue\n", "job": job}))' "$v" "$dir" "$edit")
		status=$(curl -s -m 30 -o "$dir/body" -w '%{http_code}' -H "X-SLURM-USER-NAME: $TESTCLUSTER_USER" -H "X-SLURM-USER-TOKEN: $tok" \
			-H 'Content-Type: application/json' -X POST --data "$body" "$TESTCLUSTER_REST_URL/slurm/$v/job/submit")
		id=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1])).get("job_id",""))' "$dir/body" 2>/dev/null)
		if [ "$status" = 200 ] && [ -n "$id" ]; then
			echo "$v $name: accepted (job $id), left out" >&2
			curl -s -m 30 -o /dev/null -H "X-SLURM-USER-NAME: $TESTCLUSTER_USER" -H "X-SLURM-USER-TOKEN: $tok" -X DELETE "$TESTCLUSTER_REST_URL/slurm/$v/job/$id"
			return
		fi
		# the answer without its meta (versions, client address)
		{ printf -- '-- %s --\nHTTP %s\n' "$name" "$status"; python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); d.pop("meta", None)
print(json.dumps(d, indent=2))' "$dir/body"; } >> "$out"
	}
	one partition 'job["partition"] = "nosuch"'
	one timelimit 'job["partition"] = "short"; job["time_limit"] = 10 if v == "v0.0.38" else {"set": True, "infinite": False, "number": 10}'
	one ntasks 'job["tasks"] = 200'
	one feature 'job["constraints"] = "nosuch"'
	one nodes 'job["nodes"] = "5"'
	one reservation 'job["reservation"] = "nosuch"'
	one memory 'job["memory_per_node"] = 999999 if v == "v0.0.38" else {"set": True, "infinite": False, "number": 999999}'
	one noenv 'job.pop("environment")'
	one badtype 'job["tasks"] = "many"'
}
capture bookworm v0.0.38
capture trixie v0.0.42
