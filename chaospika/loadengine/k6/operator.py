"""`chaospika load k6-operator SPEC --parallelism N`: the spec as a grafana/k6-operator test.

Writes two Kubernetes manifests: a ConfigMap holding the spec translated into a
k6 script (script.py's `translate`, key `script.js`) and a `TestRun`
(k6.io/v1alpha1) that runs it on N pods, each k6 with its own execution
segment. Apply the ConfigMap first, then the TestRun. N may not exceed the
test's most VUs as `k6 inspect` counts them (`max_vus`): the operator refuses
that ("number of instances > number of VUs"), so this command does first.

What differs from `"segments"` run here: k6-operator does not merge the pods'
results, so each pod judges the thresholds on its own share (a `count`
threshold sees about 1/N of the requests) and the results are in each pod's
log (or in an output set with `spec.arguments`, e.g. `--out
experimental-prometheus-rw`); {{counter}} values are unique within a pod only.
As with engine k6 here, {{env.NAME}} in a URL or a request name is filled in
when the script is written (from this shell or -e NAME=VALUE), while headers
and bodies read k6's __ENV in the pods: set those under the TestRun's
`spec.runner.env` (the names are listed, no value is written, so no secret of
this shell lands in a manifest).
"""

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["add_operator_command", "manifests", "write_manifests"]

SCRIPT_FILE = "script.js"
ARGUMENTS = "--no-usage-report"  # k6 in the pods never phones home either
MAX_NAME = 51  # k6-operator names jobs NAME-initializer: a 63-character DNS label
MAX_PARALLELISM = 2**31 - 1  # the CRD's int32
MAX_CONFIGMAP = 1024 * 1024  # Kubernetes' limit of a ConfigMap's data, bytes
EXIT_INVALID_CONFIG = 104  # k6's (and `load run`'s) code for a bad configuration
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _dns_label(option: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > limit:
        raise ValueError(
            f"{option} {value!r}: expected at most {limit} lowercase letters, digits "
            "or '-', starting and ending with a letter or digit"
        )
    return value


def default_name(spec_path: str) -> str:
    """A TestRun name from the spec's file name: `Orders_v2.json` -> `orders-v2`."""
    stem = re.sub(r"[^a-z0-9]+", "-", Path(spec_path).stem.lower())
    return stem[:MAX_NAME].strip("-") or "pika-load"


def manifests(
    spec: Mapping[str, Any],
    parallelism: int,
    name: str,
    namespace: str | None = None,
) -> tuple[dict, dict, list[str]]:
    """(ConfigMap, TestRun, names the script reads from __ENV) on `parallelism` pods.

    ValueError names a bad argument; ScenarioError a bad spec field.
    """
    from chaospika.loadengine.k6.script import reject_exec, translate
    from chaospika.loadengine.scenario import parse_spec

    if type(parallelism) is not int or not 1 <= parallelism <= MAX_PARALLELISM:
        raise ValueError(
            f"--parallelism: expected an integer from 1 to {MAX_PARALLELISM}, "
            f"got {parallelism!r}"
        )
    _dns_label("--name", name, MAX_NAME)
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = _dns_label("--namespace", namespace, 63)
    reject_exec(spec)
    load = parse_spec(spec)
    most = max_vus(load)
    if parallelism > most:
        raise ValueError(
            f"--parallelism {parallelism} is more than the test's most VUs ({most}): "
            "k6-operator refuses it (number of instances > number of VUs)"
        )
    script = translate(load)
    text = script.source
    size = len(text.encode())
    if size > MAX_CONFIGMAP:
        raise ValueError(
            f"the k6 script is {size} bytes, more than a ConfigMap holds "
            f"({MAX_CONFIGMAP}); use a volumeClaim"
        )
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": dict(metadata),
        "data": {SCRIPT_FILE: text},
    }
    testrun = {
        "apiVersion": "k6.io/v1alpha1",
        "kind": "TestRun",
        "metadata": dict(metadata),
        "spec": {
            "parallelism": parallelism,
            "script": {"configMap": {"name": name, "file": SCRIPT_FILE}},
            "arguments": ARGUMENTS,
        },
    }
    read = [n for n in sorted(script.env_names) if f"__ENV[{json.dumps(n)}]" in text]
    return configmap, testrun, read


def max_vus(load: Any) -> int:
    """k6 inspect's `maxVUs`, which k6-operator compares with parallelism: the
    most VUs planned at one time plus every arrival-rate scenario's maxVUs above
    its preAllocatedVUs (k6 counts those as possible however the scenarios fall)."""
    from chaospika.loadengine.runner import planned_vus

    extra = 0
    for scenario in load.scenarios.values():
        options = scenario.config.options
        allocated = getattr(options, "pre_allocated_vus", None)
        if allocated is not None:
            extra += max(0, options.max_vus - allocated)
    return planned_vus(load) + extra


def _dump(document: dict) -> str:
    """YAML with multi-line strings (the script) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(document, Dumper=Dumper, sort_keys=False, width=1 << 16)


def write_manifests(
    spec: Mapping[str, Any],
    parallelism: int,
    name: str,
    namespace: str | None = None,
    out: str = ".",
) -> tuple[list[Path], list[str]]:
    """Write NAME-configmap.yaml and NAME-testrun.yaml into `out`; (paths, env names)."""
    configmap, testrun, env_names = manifests(spec, parallelism, name, namespace)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for document, suffix in ((configmap, "configmap"), (testrun, "testrun")):
        path = folder / f"{name}-{suffix}.yaml"
        path.write_text(_dump(document))
        paths.append(path)
    return paths, env_names


def operator_command(args: argparse.Namespace) -> int:
    """The `load k6-operator` command: write the manifests, say how to run them."""
    from chaospika.loadengine.errors import ScenarioError

    name = args.name or default_name(args.spec)
    try:
        for item in args.env or ():
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"-e/--env {item!r}: expected KEY=VALUE")
            os.environ[key] = value  # read while the script is written
        with open(Path(args.spec).expanduser()) as handle:
            spec = json.load(handle)
        paths, env_names = write_manifests(
            spec, args.parallelism, name, args.namespace, args.out
        )
    except (OSError, ValueError, ScenarioError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    namespace = f" -n {args.namespace}" if args.namespace else ""
    lines = [f"wrote {path}" for path in paths]
    run = f"kubectl apply{namespace} -f"
    lines += [
        f"run it: {run} {paths[0]} && {run} {paths[1]}",
        f"watch it: kubectl get testrun {name}{namespace} -w",
        f"results: in the logs of the {args.parallelism} runner pods",
        "(k6's summary of each pod's share; each pod judges the thresholds alone)",
    ]
    if env_names:
        lines.append(
            "the script reads " + ", ".join(env_names) + " (headers, bodies) "
            "from the pods' environment: set them under spec.runner.env"
        )
    print("\n".join(lines))
    return 0


def add_operator_command(actions: argparse._SubParsersAction) -> None:
    """Add `load k6-operator` to the `load` commands."""
    command = actions.add_parser(
        "k6-operator",
        help="write a ConfigMap and a TestRun to run the spec on grafana/k6-operator",
    )
    command.add_argument("spec", help="path of the JSON load spec")
    command.add_argument(
        "--parallelism",
        type=int,
        required=True,
        metavar="N",
        help="number of k6 pods, each running one execution segment",
    )
    command.add_argument("--name", help="name of the TestRun and ConfigMap")
    command.add_argument(
        "-e",
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="a {{env.KEY}} value to write the script with (URLs, names)",
    )
    command.add_argument("--namespace", help="Kubernetes namespace of both")
    command.add_argument(
        "--out", default=".", metavar="DIR", help="folder of the manifests"
    )
    command.set_defaults(handler=operator_command)
