"""Message templates of the WebSocket probes."""

import json

import pytest
from chaoslib.exceptions import ActivityFailed

from chaospika.ws._template import compile_template, json_field

FIELDS = ("tag", "seq", "sent_ms", "padding")


def test_a_whole_string_placeholder_keeps_its_type_and_embedded_ones_become_text():
    template = compile_template(
        "t",
        {
            "at": "{{sent_ms}}",
            "n": "{{seq}}",
            "text": "like {{tag}} #{{ seq }}",
            "k": [1],
        },
        FIELDS,
        required=("tag",),
    )
    text = template.render({"sent_ms": 1.5, "seq": 7, "tag": 'a"b'})
    assert json.loads(text) == {"at": 1.5, "n": 7, "text": 'like a"b #7', "k": [1]}


def test_a_text_template_is_sent_as_text():
    template = compile_template("t", "hello {{tag}} {{seq}}", FIELDS)
    assert template.render({"tag": "x-1", "seq": 3}) == "hello x-1 3"


def test_unknown_and_missing_placeholders_are_refused():
    with pytest.raises(ActivityFailed, match=r"argument 't': unknown placeholder"):
        compile_template("t", {"a": "{{vu}}"}, FIELDS)
    with pytest.raises(
        ActivityFailed, match=r"must contain the placeholder \{\{tag\}\}"
    ):
        compile_template("t", {"a": "{{seq}}"}, FIELDS, required=("tag",))
    with pytest.raises(ActivityFailed, match="JSON value or a text"):
        compile_template("t", {"a": {1, 2}}, FIELDS)


def test_json_field_reads_a_dotted_number():
    read = json_field("meta.sent_at")
    assert read('{"meta": {"sent_at": 12.5}}') == 12.5
    assert read('{"meta": {"sent_at": "12"}}') is None
    assert read('{"meta": {"sent_at": true}}') is None
    assert read("not json") is None
    assert read('{"meta": 1}') is None
