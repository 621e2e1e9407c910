"""Apache Airflow provider for tether: TetherOperator and TetherTrigger.

Registered through the ``apache_airflow_provider`` entry point; Airflow calls
:func:`get_provider_info` to discover the operator and the trigger.
"""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-provider-tether",
        "name": "tether",
        "description": "Run analysis Tasks on HPC batch systems (Slurm, PBS, local) through the tether CLI.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "tether",
                "external-doc-url": "https://pypi.org/project/airflow-provider-tether/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {"integration-name": "tether", "python-modules": ["tether_provider.operators.tether"]},
        ],
        "extra-links": ["tether_provider.operators.tether.TetherRunLink"],
        "triggers": [
            {"integration-name": "tether", "python-modules": ["tether_provider.triggers.tether"]},
        ],
    }
