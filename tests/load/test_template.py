"""Templates: compiled once, rendered per VU and iteration."""

import json
import re
import time

import pytest

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.template import (
    Template,
    TemplateError,
    compile_json,
    compile_text,
    compile_value,
    concat_text,
)
from chaospika.loadengine.vu import VU


def make_vu(id: int = 3, iteration: int = 5, **vars) -> VU:
    vu = VU(id, "orders", Registry(), {}, {})
    vu.iteration = iteration
    vu.vars.update(vars)
    return vu


def test_text_without_placeholders_is_static():
    template = compile_text("f", "plain {text} }} with braces")
    assert template.static
    assert template.render(make_vu()) == "plain {text} }} with braces"


def test_vu_iter_scenario_and_literal_braces():
    template = compile_text("f", "/u/{{vu}}/i/{{ iter }}/{a}/{{scenario}}", "orders")
    assert not template.static
    assert template.render(make_vu(3, 5)) == "/u/3/i/5/{a}/orders"
    assert template.render(make_vu(4, 0)) == "/u/4/i/0/{a}/orders"
    assert compile_text("f", "{{scenario}}", "s1").static


def test_uuid_counter_random_randint_now_ms():
    vu = make_vu()
    uuid = compile_text("f", "{{uuid}}").render(vu)
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uuid
    )
    counter = compile_text("f", "{{counter}}")
    first, second = int(counter.render(vu)), int(counter.render(vu))
    assert second == first + 1
    choice = compile_text("f", "{{random:red|green|blue}}")
    assert {choice.render(vu) for _ in range(200)} == {"red", "green", "blue"}
    number = compile_text("f", "{{randint:-2-2}}")
    assert {int(number.render(vu)) for _ in range(300)} == {-2, -1, 0, 1, 2}
    now = int(compile_text("f", "{{now_ms}}").render(vu))
    assert abs(now - time.time() * 1000) < 1000


def test_var_renders_captured_value_or_raises():
    template = compile_text(
        "scenarios.s.steps[1].request.url", "/orders/{{var.order_id}}"
    )
    assert template.render(make_vu(order_id="o-9")) == "/orders/o-9"
    with pytest.raises(TemplateError, match=r"steps\[1\].*var.order_id"):
        template.render(make_vu())


def test_env_is_read_once_at_compile_time(monkeypatch):
    monkeypatch.setenv("PIKA_TEST_HOST", "127.0.0.1:9")
    template = compile_text("f", "http://{{env.PIKA_TEST_HOST}}/x")
    monkeypatch.setenv("PIKA_TEST_HOST", "changed")
    assert template.static and template.value == "http://127.0.0.1:9/x"
    monkeypatch.delenv("PIKA_TEST_HOST")
    with pytest.raises(ScenarioError, match="PIKA_TEST_HOST is not set") as caught:
        compile_text("scenarios.s.steps[0].request.url", "{{env.PIKA_TEST_HOST}}")
    assert caught.value.field == "scenarios.s.steps[0].request.url"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{nope}}", "unknown template"),
        ("{{var.}}", "unknown template"),
        ("{{randint:5-1}}", "MIN <= MAX"),
        ("{{randint:a-b}}", "MIN <= MAX"),
        ("{{random:}}", "unknown template"),
        ("/x/{{vu", "unclosed"),
    ],
)
def test_bad_templates_name_the_field(text, message):
    with pytest.raises(ScenarioError, match=message) as caught:
        compile_text("scenarios.s.steps[0].request.url", text)
    assert caught.value.field == "scenarios.s.steps[0].request.url"


def test_text_rejects_non_strings():
    with pytest.raises(ScenarioError, match="expected a string"):
        compile_text("f", 12)


def test_json_keeps_types_of_whole_value_placeholders():
    body = {
        "qty": "{{randint:4-4}}",
        "vu": "{{vu}}",
        "order": "{{var.order}}",
        "label": "vu-{{vu}}",
        "fixed": [1, 2.5, None, True, "x"],
        "nested": [{"iter": "{{iter}}"}],
    }
    template = compile_json("scenarios.s.steps[0].request.json", body)
    vu = make_vu(7, 2, order={"id": 1, "tags": ["a"]})
    assert json.loads(template.render(vu)) == {
        "qty": 4,
        "vu": 7,
        "order": {"id": 1, "tags": ["a"]},
        "label": "vu-7",
        "fixed": [1, 2.5, None, True, "x"],
        "nested": [{"iter": 2}],
    }


def test_json_escapes_rendered_strings_and_static_bodies_are_encoded_once():
    template = compile_json("f", {"note": "{{var.note}}"})
    tricky = 'say "hi"\n\\ é'
    assert json.loads(template.render(make_vu(note=tricky))) == {"note": tricky}
    static = compile_json("f", {"a": [1, "b"], "c": "é"})
    assert static.static and json.loads(static.value) == {"a": [1, "b"], "c": "é"}
    assert compile_json("f", "{{vu}}").render(make_vu(9)) == "9"


@pytest.mark.parametrize("slots", [1, 2, 3, 4, 5])
def test_json_with_one_to_five_placeholders_renders_compact_json(slots):
    placeholders = {
        "vu": ("{{vu}}", 7),
        "iter": ("{{iter}}", 2),
        "note": ("{{var.note}}", 'a "q"\n é'),
        "flag": ("{{var.flag}}", True),
        "order": ("{{var.order}}", {"id": 1, "tags": ["a"]}),
    }
    names = list(placeholders)[:slots]
    body = {"fixed": "x", **{name: placeholders[name][0] for name in names}}
    vu = make_vu(7, 2, note='a "q"\n é', flag=True, order={"id": 1, "tags": ["a"]})
    expected = {"fixed": "x", **{name: placeholders[name][1] for name in names}}
    text = compile_json("f", body).render(vu)
    assert text == json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
    before = int(time.time() * 1000)
    stamped = json.loads(
        compile_json("f", {"at": "{{now_ms}}", "n": "{{counter}}"}).render(vu)
    )
    assert before <= stamped["at"] <= int(time.time() * 1000)
    assert type(stamped["at"]) is int and type(stamped["n"]) is int


def test_json_rejects_templates_in_keys_and_non_json_values():
    with pytest.raises(ScenarioError, match="object keys") as caught:
        compile_json("scenarios.s.steps[0].request.json", {"{{vu}}": 1})
    assert caught.value.field == "scenarios.s.steps[0].request.json.{{vu}}"
    with pytest.raises(ScenarioError, match="JSON value"):
        compile_json("f", {"a": {1, 2}})


def test_value_renders_structures():
    template = compile_value("f", {"id": "{{var.oid}}", "list": ["{{vu}}", 1]})
    assert template.render(make_vu(2, oid=5)) == {"id": 5, "list": [2, 1]}
    assert compile_value("f", [1, {"a": "b"}]).static


def test_concat_joins_static_and_dynamic_parts():
    target = compile_text("f", "/o/{{vu}}")
    joined = concat_text(["GET ", target, " HTTP/1.1\r\n", "Host: h\r\n"])
    assert joined.render(make_vu(4)) == "GET /o/4 HTTP/1.1\r\nHost: h\r\n"
    assert concat_text(["a", Template.constant("b", "b")]).value == "ab"
