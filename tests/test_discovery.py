"""Every exported activity is discoverable with typed arguments and a docstring."""

import importlib
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import chaospika
from chaospika import ACTIVITY_MODULES, discover, load_exported_activities

ALL_MODULES = ACTIVITY_MODULES["actions"] + ACTIVITY_MODULES["probes"]


def _exported():
    for module_name in ALL_MODULES:
        module = importlib.import_module(module_name)
        assert module.__all__, f"{module_name} exports nothing"
        for name in module.__all__:
            yield module_name, name, getattr(module, name)


@pytest.mark.parametrize("module_name, name, func", list(_exported()))
def test_activity_follows_the_conventions(module_name, name, func):
    assert inspect.isfunction(func), f"{module_name}.{name} is not a function"
    assert (func.__doc__ or "").strip(), f"{module_name}.{name} has no docstring"
    params = list(inspect.signature(func).parameters.values())
    assert [p.name for p in params[-2:]] == ["configuration", "secrets"]
    for param in params:
        assert param.annotation is not inspect.Parameter.empty, (
            f"{module_name}.{name}({param.name}) has no type hint"
        )
    assert inspect.signature(func).return_annotation is not inspect.Signature.empty


def test_discovery_lists_every_exported_activity_once():
    found = {(a["mod"], a["name"]): a for a in load_exported_activities()}
    expected = {(m, n) for m, n, _ in _exported()}
    assert set(found) == expected
    for (module_name, _), activity in found.items():
        kind = "action" if module_name.endswith(".actions") else "probe"
        assert activity["type"] == kind
        assert activity["doc"]
        for arg in activity["arguments"]:
            if arg["name"] not in ("configuration", "secrets"):
                assert arg.get("type") not in (None, "object"), (activity["name"], arg)


def test_discover_reports_the_installed_version():
    result = discover()
    assert result["extension"] == {
        "name": "chaostoolkit-pika",
        "version": chaospika.__version__,
    }
    assert chaospika.__version__ != "0.0.0"
    assert result["activities"]


CHAOS = Path(sys.executable).with_name("chaos")


def test_chaos_discover_cli_lists_the_activities(tmp_path):
    chaos = str(CHAOS) if CHAOS.exists() else shutil.which("chaos")
    assert chaos, "the chaostoolkit CLI is part of the test extra"
    out = tmp_path / "discovery.json"
    subprocess.run(
        [
            chaos,
            "discover",
            "--no-install",
            "--discovery-path",
            str(out),
            "chaostoolkit-pika",
        ],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    names = {a["name"] for a in json.loads(out.read_text())["activities"]}
    assert {
        "kill_process",
        "start_process",
        "stock_consistency",
        "run_load",
    } <= names
