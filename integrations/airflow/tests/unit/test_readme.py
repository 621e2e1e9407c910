"""The provider's README is the top-level README's Airflow section (one
source): scripts/gen-provider-readme.py writes it; this test fails when
someone edits one and not the other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]


def test_provider_readme_is_generated_from_the_top_level_readme():
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-provider-readme.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_the_facts_users_asked_for_are_in_it():
    text = " ".join((REPO / "integrations" / "airflow" / "README.md").read_text().split())
    for fact in ("the DAG processor", "clear_number", "refused with exit 2", "execution_timeout` bounds the deferral",
                 "cancel_on_kill=True` cancels the job", "max_status_errors", "tether watch --stdin", "tether_show",
                 '"tether run"'):
        assert fact in text, fact
    assert "](examples/" not in text, "relative links do not resolve from the package"
