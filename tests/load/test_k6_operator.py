"""`chaospika load k6-operator`: a ConfigMap and a TestRun for grafana/k6-operator.

The TestRun is validated against the CRD's openAPIV3Schema (vendored excerpt of
grafana/k6-operator's config/crd/bases/k6.io_testruns.yaml, see its header)
with jsonschema; the script in the ConfigMap is loaded by the real k6 binary
the way k6-operator's initializer pod does (`k6 inspect --execution-requirements`).
"""

import json
import os
import subprocess
from pathlib import Path

import jsonschema  # the `test` extra
import pytest
import yaml

from chaospika.cli import main
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.k6 import find_k6, translate
from chaospika.loadengine.k6.operator import default_name, manifests, max_vus
from chaospika.loadengine.scenario import parse_spec

pytestmark = pytest.mark.timeout(60)

CRD = Path(__file__).parent / "data" / "k6-operator" / "k6.io_testruns.yaml"


@pytest.fixture(autouse=True)
def token(monkeypatch):
    """{{env.PIKA_TOKEN}} is checked when the script is written (restored after)."""
    monkeypatch.setenv("PIKA_TOKEN", "not-in-any-manifest")


def _schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "TestRun"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def _unknown_fields(document: object, schema: dict, path: str = "") -> list[str]:
    """Fields Kubernetes would prune: not declared in the structural schema."""
    found = []
    if isinstance(document, dict) and "properties" in schema:
        for key, value in document.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += _unknown_fields(
                    value, schema["properties"][key], f"{path}.{key}"
                )
    return found


def _validate_testrun(testrun: dict) -> None:
    schema = _schema()
    jsonschema.validate(testrun, schema)
    assert _unknown_fields(testrun, schema) == []
    assert testrun["apiVersion"] == "k6.io/v1alpha1"
    assert testrun["kind"] == "TestRun"


def _validate_configmap(configmap: dict, testrun: dict) -> str:
    """The ConfigMap's shape; returns the script it holds."""
    assert configmap["apiVersion"] == "v1"
    assert configmap["kind"] == "ConfigMap"
    assert set(configmap) == {"apiVersion", "kind", "metadata", "data"}
    reference = testrun["spec"]["script"]["configMap"]
    assert configmap["metadata"]["name"] == reference["name"]
    assert configmap["metadata"].get("namespace") == testrun["metadata"].get(
        "namespace"
    )
    assert list(configmap["data"]) == [reference["file"]]
    script = configmap["data"][reference["file"]]
    assert isinstance(script, str)
    return script


def _spec(url: str = "http://127.0.0.1:1/") -> dict:
    return {
        "scenarios": {
            "browse": {
                "executor": "constant-vus",
                "vus": 6,
                "duration": "30s",
                "steps": [
                    {
                        "request": {
                            "url": url,
                            "headers": {"Authorization": "Bearer {{env.PIKA_TOKEN}}"},
                        },
                        "checks": [{"status": 200}],
                    }
                ],
            }
        },
        "thresholds": {"http_req_failed": ["rate<0.01"]},
    }


def test_the_vendored_schema_rejects_what_k6_operator_rejects():
    _, testrun, _ = manifests(_spec(), 3, "shop")
    _validate_testrun(testrun)
    for bad in (
        {**testrun, "spec": {**testrun["spec"], "parallelism": "3"}},
        {**testrun, "spec": {"parallelism": 3}},  # no script
        {**testrun, "spec": {**testrun["spec"], "script": {"configMap": {}}}},
        {**testrun, "spec": {**testrun["spec"], "cleanup": "always"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, _schema())
    stray = {**testrun, "spec": {**testrun["spec"], "segments": 3}}
    assert _unknown_fields(stray, _schema()) == [".spec.segments"]


def test_manifests_hold_the_translated_script():
    configmap, testrun, env_names = manifests(_spec(), 4, "shop", "load")
    _validate_testrun(testrun)
    assert testrun["metadata"] == {"name": "shop", "namespace": "load"}
    assert testrun["spec"]["parallelism"] == 4
    assert testrun["spec"]["script"] == {
        "configMap": {"name": "shop", "file": "script.js"}
    }
    assert testrun["spec"]["arguments"] == "--no-usage-report"
    script = _validate_configmap(configmap, testrun)
    assert script == translate(_spec()).source
    assert '"Bearer " + pikaText(__ENV["PIKA_TOKEN"])' in script
    assert env_names == ["PIKA_TOKEN"]  # read in the pods, not written
    assert "not-in-any-manifest" not in json.dumps([configmap, testrun])


def test_cli_writes_both_manifests(tmp_path, capsys):
    spec_path = tmp_path / "Shop_Browse.json"
    spec_path.write_text(json.dumps(_spec()))
    out = tmp_path / "k8s"
    code = main(
        [
            "load",
            "k6-operator",
            str(spec_path),
            "--parallelism",
            "3",
            "--namespace",
            "load",
            "--out",
            str(out),
            "-e",
            "PIKA_TOKEN=from-the-command-line",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "shop-browse-configmap.yaml",
        "shop-browse-testrun.yaml",
    ]
    assert "kubectl apply -n load -f" in printed and "PIKA_TOKEN" in printed
    configmap = yaml.safe_load((out / "shop-browse-configmap.yaml").read_text())
    testrun = yaml.safe_load((out / "shop-browse-testrun.yaml").read_text())
    _validate_testrun(testrun)
    assert testrun["spec"]["parallelism"] == 3
    script = _validate_configmap(configmap, testrun)
    assert script == translate(_spec()).source
    assert "from-the-command-line" not in script


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--parallelism", "0"], "--parallelism"),
        (["--parallelism", "7"], "most VUs (6)"),  # k6-operator: instances > VUs
        (["--parallelism", "2", "--name", "Bad_Name"], "--name"),
        (["--parallelism", "2", "--name", "x" * 52], "--name"),
        (["--parallelism", "2", "--namespace=Load"], "--namespace"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, capsys, extra, message):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(_spec()))
    out = tmp_path / "k8s"
    assert (
        main(["load", "k6-operator", str(spec_path), "--out", str(out), *extra]) == 104
    )
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_spec_k6_cannot_run_is_named(tmp_path, capsys):
    spec = _spec()
    spec["scenarios"]["browse"]["exec"] = "shop:browse"
    del spec["scenarios"]["browse"]["steps"]
    with pytest.raises(ScenarioError, match="scenarios.browse.exec"):
        manifests(spec, 2, "shop")
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    assert main(["load", "k6-operator", str(spec_path), "--parallelism", "2"]) == 104
    assert "scenarios.browse.exec" in capsys.readouterr().err


def test_default_name_is_a_dns_label():
    assert default_name("/specs/Shop_Browse v2.json") == "shop-browse-v2"
    assert default_name("___.json") == "pika-load"
    assert len(default_name("a" * 80 + ".json")) == 51


def _k6_available() -> bool:
    try:
        find_k6()
    except ScenarioError:
        return False
    return True


def _inspect(folder: Path, source: str) -> dict:
    """What k6-operator's initializer runs on the script: k6 inspect."""
    script = folder / "script.js"
    script.write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("K6_")}
    env["K6_NO_USAGE_REPORT"] = "true"
    inspected = subprocess.run(
        [find_k6(), "inspect", "--execution-requirements", str(script)],
        capture_output=True,
        env=env,
        timeout=30,
        check=True,
    )
    return json.loads(inspected.stdout)


@pytest.mark.skipif(not _k6_available(), reason="k6 binary not installed")
def test_real_k6_reads_the_configmap_script_like_the_initializer(tmp_path):
    configmap, testrun, _ = manifests(_spec(), 3, "shop")
    options = _inspect(tmp_path, _validate_configmap(configmap, testrun))
    assert options["maxVUs"] == 6  # what --parallelism may not exceed (tested above)
    assert options["totalDuration"] == "1m0s"  # 30 s + gracefulStop 30 s
    assert options["scenarios"]["browse"]["executor"] == "constant-vus"
    assert options["thresholds"] == {"http_req_failed": ["rate<0.01"]}


def _mixed_spec() -> dict:
    """Arrival rate (2 VUs, up to 10) still in its gracefulStop when ramping starts."""
    url = "http://127.0.0.1:1/"
    return {
        "scenarios": {
            "a": {
                "executor": "constant-arrival-rate",
                "rate": 5,
                "duration": "10s",
                "preAllocatedVUs": 2,
                "maxVUs": 10,
                "steps": [{"request": {"url": url}}],
            },
            "b": {
                "executor": "ramping-vus",
                "startTime": "20s",
                "stages": [{"duration": "5s", "target": 4}],
                "steps": [{"request": {"url": url}}],
            },
        }
    }


@pytest.mark.skipif(not _k6_available(), reason="k6 binary not installed")
@pytest.mark.parametrize("spec", [_spec(), _mixed_spec()], ids=["vus", "mixed"])
def test_max_vus_is_what_k6_inspect_reports(tmp_path, spec):
    assert (
        max_vus(parse_spec(spec))
        == _inspect(tmp_path, translate(spec).source)["maxVUs"]
    )
    assert manifests(spec, max_vus(parse_spec(spec)), "shop")[1]["spec"]
    with pytest.raises(ValueError, match="instances > number of VUs"):
        manifests(spec, max_vus(parse_spec(spec)) + 1, "shop")
