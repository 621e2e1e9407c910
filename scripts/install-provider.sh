#!/usr/bin/env bash
# Builds the provider's wheel and sdist (--no-isolation: hatchling comes
# from the lock), checks what the wheel holds, and installs it into the
# Airflow venv with --no-deps. Usage: install-provider.sh VENV OUTDIR
# (test-airflow.sh, bench-triggerer.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$1 OUT=$2
PY="$VENV/bin/python"
AF=integrations/airflow
locked() { if command -v flock >/dev/null; then flock "$VENV.flock" "$@"; else "$@"; fi; }
"$PY" -m build --no-isolation --outdir "$OUT/dist" "$AF" >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log" >&2; exit 1; }
wheel=$(ls "$OUT"/dist/airflow_provider_tether-*-py3-none-any.whl)
ls "$OUT"/dist/airflow_provider_tether-*.tar.gz >/dev/null
"$PY" - "$wheel" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["tether_provider/__init__.py", "tether_provider/operators/tether.py", "tether_provider/triggers/tether.py"]
missing = [n for n in need if n not in names]
ep = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
eps = zipfile.ZipFile(sys.argv[1]).read(ep).decode()
assert not missing, f"wheel lacks {missing}"
assert "[apache_airflow_provider]" in eps and "tether_provider:get_provider_info" in eps, eps
assert not any(n.startswith("tests/") for n in names), "tests leaked into the wheel"
PYEOF
# Serialise with scripts/airflow-env.sh (which may be rebuilding the venv).
if [ -x "$VENV/bin/uv" ]; then
	locked "$VENV/bin/uv" pip install --python "$PY" --no-deps --reinstall --quiet "$wheel" >&2
else
	locked "$PY" -m pip install --no-deps --force-reinstall --quiet "$wheel" >&2
fi
basename "$wheel"
