#!/usr/bin/env bash
# Refresh the slurmrestd OpenAPI specs from the running test clusters
# (`make testcluster` first), regenerate the clients and test them.
#
#   scripts/refresh-specs.sh [22.05] [24.11]     (default: both)
#
# Reads the URL, user and token file from the clusters' generated site
# files (site-configs/testcluster/slurm-<release>-rest.toml). The token is
# passed to curl in the environment of one process, never in argv.
set -euo pipefail
cd "$(dirname "$0")/.."
releases=("$@")
[ ${#releases[@]} -gt 0 ] || releases=(22.05 24.11)

field() { # field FILE KEY -> the string value of KEY in [slurmrest]
	sed -n "/^\[slurmrest\]/,/^\[/s/^$2 *= *\"\(.*\)\"/\1/p" "$1" | head -1
}

for rel in "${releases[@]}"; do
	site=site-configs/testcluster/slurm-$rel-rest.toml
	if [ ! -f "$site" ]; then
		echo "refresh-specs: $site not found: start the test clusters with 'make testcluster'" >&2
		exit 1
	fi
	url=$(field "$site" url)
	user=$(field "$site" user)
	tokfile=$(field "$site" token_file)
	if [ -z "$url" ] || [ -z "$tokfile" ] || [ ! -r "$tokfile" ]; then
		echo "refresh-specs: $site: need [slurmrest] url and a readable token_file" >&2
		exit 1
	fi
	SLURMREST_USER_NAME=$user SLURMREST_USER_TOKEN=$(cat "$tokfile") \
		backends/slurmrest/internal/refresh-specs.sh "$rel" "$url"
done
go generate ./backends/slurmrest/internal/...
go test -count=1 ./backends/slurmrest/...
git status --short backends/slurmrest/internal
