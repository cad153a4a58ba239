"""parse_spec: the k6-shaped JSON spec, its defaults, and one error per bad field."""

import copy

import pytest

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.metrics import DEFAULT_TREND_STATS
from chaospika.loadengine.scenario import LoadSpec, parse_spec

THINK = [{"think": "10ms"}]


async def exec_target(vu):
    """An `exec` function these tests point at."""


def not_async(vu):
    """Not a coroutine function: `exec` must refuse it."""


def spec_with(**scenario):
    """A one-scenario spec; `scenario` replaces the default constant-vus options."""
    options = scenario or {"executor": "constant-vus", "vus": 2, "duration": "1s"}
    options = {"steps": THINK, **options}
    return {"scenarios": {"main": options}}


def error_of(spec) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        parse_spec(spec)
    return caught.value


# -- valid specs --------------------------------------------------------------------


def test_defaults_follow_k6():
    load = parse_spec(spec_with())
    assert isinstance(load, LoadSpec)
    config = load.scenarios["main"].config
    assert config.graceful_stop == 30.0 and config.start_time == 0.0
    assert config.options.vus == 2 and config.options.duration == 1.0
    assert load.processes == 1
    assert load.summary_trend_stats == list(DEFAULT_TREND_STATS)
    assert load.max_duration() == 31.0
    assert callable(load.scenarios["main"].iteration)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"executor": "constant-vus", "duration": "1s"}, {"vus": 1}),
        (
            {"executor": "ramping-vus", "stages": [{"duration": "1s", "target": 3}]},
            {"start_vus": 1, "graceful_ramp_down": 30.0},
        ),
        (
            {"executor": "constant-arrival-rate", "rate": 5, "duration": "1s",
             "preAllocatedVUs": 2},
            {"time_unit": 1.0, "max_vus": 2},
        ),
        (
            {"executor": "ramping-arrival-rate", "preAllocatedVUs": 1,
             "stages": [{"duration": "1s", "target": 3}]},
            {"start_rate": 0, "time_unit": 1.0, "max_vus": 1},
        ),
        ({"executor": "per-vu-iterations"}, {"vus": 1, "iterations": 1,
                                             "max_duration": 600.0}),
        ({"executor": "shared-iterations"}, {"vus": 1, "iterations": 1,
                                             "max_duration": 600.0}),
    ],
)  # fmt: skip
def test_every_executor_gets_k6s_defaults(options, expected):
    config = parse_spec(spec_with(**options)).scenarios["main"].config
    for name, value in expected.items():
        assert getattr(config.options, name) == value


def test_common_options_tags_and_exec():
    spec = {
        "tags": {"team": "pika", "env": "test"},
        "processes": 2,
        "summaryTrendStats": ["avg", "p(99.9)", "count"],
        "scenarios": {
            "later": {
                "executor": "shared-iterations",
                "vus": 2,
                "iterations": 4,
                "maxDuration": "2s",
                "startTime": "1m30s",
                "gracefulStop": "500ms",
                "tags": {"env": "staging"},
                "exec": "test_scenario:exec_target",
            }
        },
    }
    original = copy.deepcopy(spec)
    load = parse_spec(spec)
    config = load.scenarios["later"].config
    assert config.start_time == 90.0 and config.graceful_stop == 0.5
    assert config.tags == {"team": "pika", "env": "staging"}
    assert load.scenarios["later"].iteration is exec_target
    assert load.processes == 2 and load.summary_trend_stats[1] == "p(99.9)"
    assert load.max_duration() == 92.5
    assert load.raw == original and spec == original


def test_descriptions_are_k6s():
    spec = {
        "scenarios": {
            "ramp": {
                "executor": "ramping-vus",
                "startVUs": 0,
                "stages": [{"duration": "20s", "target": 10}, {"duration": "10s",
                                                                "target": 0}],
                "gracefulRampDown": "0s",
                "steps": THINK,
            }
        }
    }  # fmt: skip
    text = parse_spec(spec).scenarios["ramp"].describe()
    assert text == (
        "Up to 10 looping VUs for 30s over 2 stages "
        "(gracefulRampDown: 0s, gracefulStop: 30s)"
    )


# -- one error per bad field ----------------------------------------------------------

BAD_FIELDS = [
    # (what, spec change, field named)
    ("unknown top-level key", {"vus": 3}, "vus"),
    ("processes zero", {"processes": 0}, "processes"),
    ("processes not an int", {"processes": "two"}, "processes"),
    (
        "bad trend stat",
        {"summaryTrendStats": ["avg", "p(101)"]},
        "summaryTrendStats[1]",
    ),
    ("trend stat typo", {"summaryTrendStats": ["average"]}, "summaryTrendStats[0]"),
    ("global tag not a string", {"tags": {"team": 7}}, "tags.team"),
    ("tags not an object", {"tags": ["a"]}, "tags"),
]


@pytest.mark.parametrize(("what", "change", "field"), BAD_FIELDS)
def test_bad_top_level_fields_are_named(what, change, field):
    assert error_of({**spec_with(), **change}).field == field


@pytest.mark.parametrize(
    ("what", "scenarios", "field"),
    [
        ("missing", None, "scenarios"),
        ("empty", {}, "scenarios"),
        ("not an object", ["main"], "scenarios"),
        ("bad name", {"my scenario": {"executor": "constant-vus"}},
         "scenarios.my scenario"),
        ("scenario not an object", {"main": "constant-vus"}, "scenarios.main"),
    ],
)  # fmt: skip
def test_bad_scenarios_are_named(what, scenarios, field):
    spec = {} if scenarios is None else {"scenarios": scenarios}
    assert error_of(spec).field == field


def test_a_spec_that_is_not_an_object_is_refused():
    assert error_of(["scenarios"]).field == "spec"


BAD_OPTIONS = [
    ("no executor", {"vus": 1}, "executor"),
    ("unknown executor", {"executor": "constant-rps"}, "executor"),
    ("option of another executor", {"executor": "constant-vus", "duration": "1s",
                                    "rate": 5}, "rate"),
    ("malformed duration", {"executor": "constant-vus", "duration": "ten seconds"},
     "duration"),
    ("duration under k6's 1s minimum", {"executor": "constant-vus",
                                        "duration": "500ms"}, "duration"),
    ("missing duration", {"executor": "constant-vus", "vus": 2}, "duration"),
    ("zero vus", {"executor": "constant-vus", "vus": 0, "duration": "1s"}, "vus"),
    ("fractional vus", {"executor": "constant-vus", "vus": 1.5, "duration": "1s"},
     "vus"),
    ("vus as text", {"executor": "constant-vus", "vus": "3", "duration": "1s"}, "vus"),
    ("vus as bool", {"executor": "constant-vus", "vus": True, "duration": "1s"}, "vus"),
    ("missing rate", {"executor": "constant-arrival-rate", "duration": "1s",
                      "preAllocatedVUs": 1}, "rate"),
    ("zero rate", {"executor": "constant-arrival-rate", "rate": 0, "duration": "1s",
                   "preAllocatedVUs": 1}, "rate"),
    ("negative rate", {"executor": "constant-arrival-rate", "rate": -5,
                       "duration": "1s", "preAllocatedVUs": 1}, "rate"),
    ("zero timeUnit", {"executor": "constant-arrival-rate", "rate": 5,
                       "timeUnit": "0s", "duration": "1s", "preAllocatedVUs": 1},
     "timeUnit"),
    ("missing preAllocatedVUs", {"executor": "constant-arrival-rate", "rate": 5,
                                 "duration": "1s"}, "preAllocatedVUs"),
    ("maxVUs < preAllocatedVUs", {"executor": "constant-arrival-rate", "rate": 5,
                                  "duration": "1s", "preAllocatedVUs": 5,
                                  "maxVUs": 2}, "maxVUs"),
    ("negative startRate", {"executor": "ramping-arrival-rate", "startRate": -1,
                            "preAllocatedVUs": 1,
                            "stages": [{"duration": "1s", "target": 1}]}, "startRate"),
    ("missing stages", {"executor": "ramping-vus"}, "stages"),
    ("stages not a list", {"executor": "ramping-vus", "stages": "1s:10"}, "stages"),
    ("no stage", {"executor": "ramping-vus", "stages": []}, "stages"),
    ("stage not an object", {"executor": "ramping-vus", "stages": [["1s", 3]]},
     "stages[0]"),
    ("stage without target", {"executor": "ramping-vus",
                              "stages": [{"duration": "1s", "target": 1},
                                         {"duration": "1s"}]}, "stages[1].target"),
    ("negative stage target", {"executor": "ramping-vus",
                               "stages": [{"duration": "1s", "target": -1}]},
     "stages[0].target"),
    ("malformed stage duration", {"executor": "ramping-vus",
                                  "stages": [{"duration": "1 s", "target": 1}]},
     "stages[0].duration"),
    ("unknown stage key", {"executor": "ramping-vus",
                           "stages": [{"duration": "1s", "target": 1, "vus": 1}]},
     "stages[0].vus"),
    ("nothing ever runs", {"executor": "ramping-vus", "startVUs": 0,
                           "stages": [{"duration": "1s", "target": 0}]}, "stages"),
    ("negative gracefulRampDown", {"executor": "ramping-vus", "gracefulRampDown": -1,
                                   "stages": [{"duration": "1s", "target": 1}]},
     "gracefulRampDown"),
    ("iterations < vus", {"executor": "shared-iterations", "vus": 5,
                          "iterations": 2}, "iterations"),
    ("zero iterations", {"executor": "per-vu-iterations", "iterations": 0},
     "iterations"),
    ("maxDuration under 1s", {"executor": "per-vu-iterations", "maxDuration": "1ms"},
     "maxDuration"),
    ("negative startTime", {"executor": "shared-iterations", "startTime": "-1s"},
     "startTime"),
    ("malformed gracefulStop", {"executor": "shared-iterations",
                                "gracefulStop": "soon"}, "gracefulStop"),
    ("scenario tag not a string", {"executor": "shared-iterations",
                                   "tags": {"flow": 1}}, "tags.flow"),
    ("exec not module:function", {"executor": "shared-iterations",
                                  "exec": "test_scenario.exec_target"}, "exec"),
    ("exec module missing", {"executor": "shared-iterations",
                             "exec": "no_such_module_here:run"}, "exec"),
    ("exec function missing", {"executor": "shared-iterations",
                               "exec": "test_scenario:nothing"}, "exec"),
    ("exec not async", {"executor": "shared-iterations",
                        "exec": "test_scenario:not_async"}, "exec"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "options", "field"), BAD_OPTIONS)
def test_bad_scenario_options_are_named(what, options, field):
    options = dict(options)
    spec = {"scenarios": {"main": options}}
    if "exec" not in options:
        options["steps"] = THINK
    assert error_of(spec).field == f"scenarios.main.{field}"


@pytest.mark.parametrize(
    ("iteration", "field"),
    [
        ({}, "scenarios.main.steps"),
        ({"steps": THINK, "exec": "test_scenario:exec_target"}, "scenarios.main.steps"),
        ({"steps": []}, "scenarios.main.steps"),
        ({"steps": [{"jump": 1}]}, "scenarios.main.steps[0]"),
    ],
)
def test_steps_or_exec_exactly_one(iteration, field):
    options = {"executor": "shared-iterations", **iteration}
    error = error_of({"scenarios": {"main": options}})
    assert error.field.startswith(field)


def test_an_unknown_threshold_metric_is_named():
    spec = {**spec_with(), "thresholds": {"no_such_metric": ["count>1"]}}
    assert error_of(spec).field.startswith("thresholds.no_such_metric")


def test_error_messages_say_what_was_expected():
    error = error_of(spec_with(executor="constant-vus", vus=-2, duration="1s"))
    assert str(error) == "scenarios.main.vus: must be >= 1, got -2"


def test_a_spec_holds_no_metrics_each_run_makes_its_registry():
    load = parse_spec(
        {
            "metrics": {"likes": {"type": "trend", "isTime": True}},
            "thresholds": {"http_reqs{ scenario:default }": ["count>0"]},
            "vus": 1,
            "iterations": 1,
            "steps": THINK,
        }
    )
    assert not hasattr(load, "registry")
    first, second = load.new_registry(), load.new_registry()
    assert first is not second
    assert first.metric("likes").contains == "time"
    assert "http_reqs{scenario:default}" in first  # the threshold's sub-metric
    first.add("likes", 5.0)
    assert first.stats("likes", ["count"])["count"] == 1
    assert second.stats("likes", ["count"])["count"] == 0
