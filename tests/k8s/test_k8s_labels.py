"""Label selectors parsed and matched with the API server's semantics."""

import pytest

from chaospika.k8s import _labels

WEB = {"app": "web", "tier": "frontend", "env": "prod", "shard": "3"}
DB = {"app": "db", "env": "qa"}
BARE: dict = {}


@pytest.mark.parametrize(
    ("selector", "web", "db", "bare"),
    [
        ("", True, True, True),  # the empty selector selects everything
        ("app=web", True, False, False),
        ("app==web", True, False, False),
        ("app = web , env = prod", True, False, False),
        ("app!=web", False, True, True),  # != matches objects without the key
        ("env in (prod, qa)", True, True, False),
        ("tier notin (frontend,backend)", False, True, True),  # so does notin
        ("tier", True, False, False),
        ("!tier", False, True, True),
        ("shard>2", True, False, False),
        ("shard<3", False, False, False),
        ("app in (web),!version", True, False, False),
        ("example.com/team=a", False, False, False),
        ("app=", False, False, False),  # the empty value
    ],
)
def test_selectors_match_as_the_api_server_matches(selector, web, db, bare):
    requirements = _labels.parse(selector)
    assert _labels.matches(requirements, WEB) is web
    assert _labels.matches(requirements, DB) is db
    assert _labels.matches(requirements, BARE) is bare


@pytest.mark.parametrize(
    "selector",
    [
        "app in ()",
        "app in (a",
        "app in a",
        "app=web,",
        "app=web env=prod",
        "=web",
        "!",
        "in=web",
        "app=we b",
        "app=-web",
        "app>web",
        "-app=web",
        "a" * 64 + "=x",
        "app=" + "x" * 64,
        "Bad_Prefix/app=x",
    ],
)
def test_malformed_selectors_are_refused(selector):
    with pytest.raises(_labels.SelectorError):
        _labels.parse(selector)


def test_positive_requirements_are_told_apart_from_exclusions():
    kinds = {
        str(r): r.positive for r in _labels.parse("a=1,b!=2,c in (x),d notin (y),e,!f")
    }
    assert kinds == {
        "a=1": True,
        "b!=2": False,
        "c in (x)": True,
        "d notin (y)": False,
        "e": False,
        "!f": False,
    }


def test_a_workload_selector_becomes_a_label_selector():
    text = _labels.from_label_selector(
        {
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "qa"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert text == "app=web,tier=front,env in (prod,qa),!canary"
    assert _labels.matches(
        _labels.parse(text), {"app": "web", "tier": "front", "env": "qa"}
    )
    assert _labels.from_label_selector({}) == ""
