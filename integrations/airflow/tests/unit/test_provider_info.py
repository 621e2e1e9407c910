"""get_provider_info() is valid for Airflow and names importable modules."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import airflow
import jsonschema

import tether_provider


def test_provider_info_matches_airflows_schema():
    info = tether_provider.get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-tether"
    assert info["versions"] == [tether_provider.__version__]


def test_listed_modules_import_and_hold_the_classes():
    info = tether_provider.get_provider_info()
    (ops,) = info["operators"]
    (trigs,) = info["triggers"]
    assert importlib.import_module(ops["python-modules"][0]).TetherOperator
    assert importlib.import_module(trigs["python-modules"][0]).TetherTrigger
