#!/usr/bin/env bash
# Fetch the OpenAPI spec from a live slurmrestd into the generated-client
# packages next to this script, byte for byte as the server serves it.
#
#   refresh-specs.sh RELEASE URL
#
#   RELEASE  22.05  -> v0038/openapi.json
#            24.11  -> v0040/openapi.json v0041/openapi.json v0042/openapi.json
#   URL      slurmrestd base URL: http(s)://host:port, or
#            unix:///path/to/slurmrestd.sock (rest_auth/local)
#
# Environment (sent as headers when set):
#   SLURMREST_USER_NAME   X-SLURM-USER-NAME  (22.05 needs it with the token)
#   SLURMREST_USER_TOKEN  X-SLURM-USER-TOKEN (a JWT: scontrol token lifespan=600)
# Do not put the token in SLURM_JWT in a shell that also runs sbatch/srun.
#
# Afterwards: go generate ./backends/slurmrest/internal/... && go test ./backends/slurmrest/internal/...
# and review the diff of openapi.json, client.gen.go and the overlays.
set -euo pipefail

usage() {
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

[ $# -eq 2 ] || usage
release=$1
url=${2%/}
here=$(cd "$(dirname "$0")" && pwd)

case $release in
22.05) pkgs=(v0038) ;;
24.11) pkgs=(v0040 v0041 v0042) ;;
*) echo "refresh-specs.sh: unknown release '$release' (want 22.05 or 24.11)" >&2; usage ;;
esac

tmp=$(mktemp)
hdr=$(mktemp) # the headers go to curl in a 0600 file, never in argv (ps)
trap 'rm -f "$tmp" "$hdr"' EXIT
chmod 600 "$hdr"
echo 'Accept: application/json' >"$hdr"
[ -n "${SLURMREST_USER_NAME:-}" ] && echo "X-SLURM-USER-NAME: $SLURMREST_USER_NAME" >>"$hdr"
[ -n "${SLURMREST_USER_TOKEN:-}" ] && echo "X-SLURM-USER-TOKEN: $SLURMREST_USER_TOKEN" >>"$hdr"
curl_args=(--fail --silent --show-error --max-time 60 -H "@$hdr")
case $url in
unix://*) curl_args+=(--unix-socket "${url#unix://}"); base=http://localhost ;;
http://* | https://*) base=$url ;;
*) echo "refresh-specs.sh: URL must be http(s)://host:port or unix:///path.sock, got '$url'" >&2; exit 2 ;;
esac

# Both 22.05 and 24.11 serve the spec at /openapi/v3 (22.05 also at
# /openapi, /openapi.json; the content depends on the -s plugins loaded).
echo "fetching $base/openapi/v3 ..." >&2
curl "${curl_args[@]}" -o "$tmp" "$base/openapi/v3"

# Sanity checks before anything is overwritten.
if command -v jq >/dev/null; then
	jq -e '.openapi and .paths' "$tmp" >/dev/null ||
		{ echo "refresh-specs.sh: the answer is not an OpenAPI document" >&2; exit 1; }
	served=$(jq -r '.info.version' "$tmp")
	echo "served: $(jq -r '.info.title' "$tmp") $served (openapi $(jq -r '.openapi' "$tmp"))" >&2
	# 24.11 puts the release in info.version ("Slurm-24.11.5&openapi/..."),
	# 22.05 only the API version ("0.0.38").
	case $served in
	Slurm-"$release".* | [0-9]*) ;;
	*) echo "warning: info.version '$served' is not Slurm $release" >&2 ;;
	esac
	for pkg in "${pkgs[@]}"; do
		v="v0.0.${pkg#v00}" # v0038 -> v0.0.38
		jq -e --arg v "/slurm/$v/" '[.paths | keys[] | select(startswith($v))] | length > 0' "$tmp" >/dev/null ||
			{ echo "refresh-specs.sh: the spec has no /slurm/$v/ paths: this slurmrestd does not serve $v" >&2; exit 1; }
	done
else
	echo "warning: jq not found, not checking the spec" >&2
	grep -q '"openapi"' "$tmp" || { echo "refresh-specs.sh: the answer is not an OpenAPI document" >&2; exit 1; }
fi

for pkg in "${pkgs[@]}"; do
	cp "$tmp" "$here/$pkg/openapi.json"
	chmod 644 "$here/$pkg/openapi.json"
	echo "wrote $here/$pkg/openapi.json" >&2
done
echo "now run: go generate ./backends/slurmrest/internal/... && go test ./backends/slurmrest/internal/..." >&2
