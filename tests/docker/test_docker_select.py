"""Container selection without an engine: matching, modes, seeds, empty and over-wide."""

import pytest
from chaoslib.exceptions import ActivityFailed

from chaospika.docker import _engine, _select


def entry(name: str, state: str = "running", **labels: str) -> dict:
    return {"Id": f"id-{name}", "Names": [f"/{name}"], "State": state, "Labels": labels}


FLEET = [
    entry("api-1", app="api", tier="web"),
    entry("api-2", app="api", tier="web"),
    entry("api-3", "exited", app="api", tier="web"),
    entry("redis", app="redis"),
    entry("redis-replica", "paused", app="redis", role="replica"),
    entry("worker", app="worker", tier="back"),
]


def names(selected: list[dict]) -> list[str]:
    return [_select.summary_name(s) for s in selected]


def select(state="running", mode="all", qty=None, seed=None, cap=None, **crit):
    return _select.select(
        FLEET, _select.criteria(**crit), state, mode, qty, seed, cap
    ).selected


def test_exact_names_labels_and_an_anchored_pattern():
    assert names(select(name="redis")) == ["redis"]
    assert names(select(name=["worker", "redis"])) == ["redis", "worker"]
    assert names(select(selector="app=api")) == ["api-1", "api-2"]
    assert names(select(selector="tier")) == ["api-1", "api-2", "worker"]
    assert names(select(selector="app=api, tier=web")) == ["api-1", "api-2"]
    # anchored: "api" alone matches no name, "redis" is not a prefix match
    with pytest.raises(ActivityFailed, match="no container matches"):
        select(name_pattern="api")
    assert names(select(name_pattern=r"api-\d")) == ["api-1", "api-2"]
    assert names(select(name_pattern="redis")) == ["redis"]
    # every criterion given must hold
    assert names(select(selector="app=api", name_pattern=".*-2")) == ["api-2"]


def test_the_state_the_action_needs():
    assert names(select("stopped", selector="app=api")) == ["api-3"]
    assert names(select("paused", selector="app=redis")) == ["redis-replica"]
    with pytest.raises(ActivityFailed, match="none is running.*api-3 \\(exited\\)"):
        select(name="api-3")
    empty = _select.select(
        FLEET, _select.criteria(name="redis"), "paused", "all", None, None, None, True
    )
    assert empty.selected == [] and names(empty.matched) == ["redis"]


def test_modes_and_seeds():
    crit = {"selector": "tier"}
    assert len(select(mode="one", **crit)) == 1
    seeded = [names(select(mode="fixed", qty=2, seed=7, **crit)) for _ in range(5)]
    assert len(seeded[0]) == 2 and all(pick == seeded[0] for pick in seeded)
    picks = {tuple(names(select(mode="one", seed=s, **crit))) for s in range(40)}
    assert len(picks) == 3  # the seed changes the pick; every container can be picked
    assert len(select(mode="percent", qty=67, **crit)) == 2  # 3 * 67% = 2.01 -> 2
    assert len(select(mode="percent", qty=100, **crit)) == 3


def test_an_empty_selection_is_an_error():
    with pytest.raises(ActivityFailed, match="no container matches"):
        select(name="nope")
    with pytest.raises(ActivityFailed, match="selects no container"):
        select(mode="percent", qty=30, name="redis")  # 1 * 30% = 0
    with pytest.raises(ActivityFailed, match="asks for 4 containers but only 3"):
        select(mode="fixed", qty=4, selector="tier")


def test_a_selection_wider_than_max_targets_is_an_error():
    with pytest.raises(ActivityFailed, match="3 containers .* more than max_targets=2"):
        select(mode="all", cap=2, selector="tier")
    assert len(select(mode="all", cap=3, selector="tier")) == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "at least one of"),
        ({"name": ""}, "argument 'name'"),
        ({"name": "a/b"}, "argument 'name'"),
        ({"selector": "a=b,,c"}, "argument 'selector'"),
        ({"selector": "a!=b"}, "argument 'selector'"),
        ({"name_pattern": "(unclosed"}, "argument 'name_pattern'"),
    ],
)
def test_bad_matching_arguments_are_named(arguments, message):
    with pytest.raises(ActivityFailed, match=message):
        _select.criteria(**arguments)


@pytest.mark.parametrize(
    ("mode", "qty", "message"),
    [
        ("some", None, "argument 'mode'"),
        ("one", 2, "argument 'qty' is only for"),
        ("fixed", None, "argument 'qty' is needed"),
        ("fixed", 0, "argument 'qty' must be >= 1"),
        ("percent", 0, "argument 'qty' must be > 0"),
        ("percent", 101, "argument 'qty' must be <= 100"),
    ],
)
def test_bad_selection_arguments_are_named(mode, qty, message):
    with pytest.raises(ActivityFailed, match=message):
        _select.selection_args(mode, qty, None, None)
    with pytest.raises(ActivityFailed, match="argument 'max_targets'"):
        _select.selection_args("all", None, None, 0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
        ("tcp://127.0.0.1:2375", "tcp://127.0.0.1:2375"),
        ("tcp://localhost:2375", "tcp://localhost:2375"),
        ("http://[::1]:2375", "http://[::1]:2375"),
    ],
)
def test_local_engines_are_accepted(url, expected):
    assert _engine.docker_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "tcp://10.0.0.5:2375",
        "tcp://docker.example.com:2376",
        "ssh://user@host",
        "tcp://127.0.0.1",
        "unix://relative.sock",
    ],
)
def test_remote_engines_are_refused(url):
    with pytest.raises(ActivityFailed, match="argument 'docker_url'"):
        _engine.docker_url(url)


def test_docker_host_from_the_environment_is_checked_too(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://192.168.1.9:2375")
    with pytest.raises(ActivityFailed, match="DOCKER_HOST"):
        _engine.docker_url(None)
    monkeypatch.delenv("DOCKER_HOST")
    assert _engine.docker_url(None) == "unix:///var/run/docker.sock"


def test_engine_timestamps():
    assert _engine.started_at("0001-01-01T00:00:00Z") is None
    assert _engine.started_at("2024-05-01T10:20:30.123456789Z") == pytest.approx(
        1714558830.123456
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "at least one of"),
        ({"name": "x", "mode": "fixed"}, "argument 'qty' is needed"),
        ({"name": "x", "max_targets": 0}, "argument 'max_targets'"),
        ({"name": "x", "docker_url": "tcp://10.0.0.1:2375"}, "loopback"),
        ({"name": "x", "timeout": "soon"}, "argument 'timeout'"),
    ],
)
def test_actions_check_their_arguments_before_asking_the_engine(arguments, message):
    from chaospika.docker import actions

    with pytest.raises(ActivityFailed, match=message):
        actions.stop_containers(**arguments)
