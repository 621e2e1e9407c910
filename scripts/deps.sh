#!/usr/bin/env bash
# Installs what the tests need when running as root on Debian; elsewhere it
# says what is missing. Idempotent.
set -euo pipefail
missing=()
command -v mpicc >/dev/null && command -v mpirun >/dev/null || missing+=(openmpi-bin libopenmpi-dev)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# the monitor's runs page is tested in a real headless browser
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "deps: installing ${missing[*]}" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	else
		echo "deps: missing ${missing[*]} (install them, or run as root on Debian)" >&2
		exit 1
	fi
fi
