"""The `ws` step (k6's ws.connect): a WebSocket session compiled into a `WsPlan`."""

import re
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.step_common import Runner, _Context, _headers, _static_text
from chaospika.loadengine.template import (
    Template,
    compile_json,
    compile_text,
    resolve_static,
)
from chaospika.loadengine.units import parse_duration
from chaospika.loadengine.validate import (
    reject_unknown,
    require_int,
    require_mapping,
    require_text,
)
from chaospika.loadengine.vu import VU
from chaospika.loadengine.ws_plan import WsPlan, run_ws_plan


def _compile_message(field: str, value: Any, scenario: str) -> Template:
    if isinstance(value, str):
        return compile_text(field, value, scenario)
    return compile_json(field, value, scenario)


def _compile_ws(field: str, value: Any, ctx: _Context) -> Runner:
    where = f"{field}.ws"
    spec = require_mapping(where, value)
    reject_unknown(
        where,
        spec,
        (
            "url",
            "headers",
            "join",
            "send",
            "expect",
            "latency_field",
            "hold",
            "reconnects",
            "name",
            "timeout",
        ),
    )
    url = resolve_static(
        f"{where}.url",
        require_text(f"{where}.url", spec.get("url")).strip(),
        ctx.scenario,
    )
    if not re.match(r"wss?://[^/?#]", url):
        raise ScenarioError(
            f"{where}.url", f"expected a ws:// or wss:// URL, got {url!r}"
        )
    plan = WsPlan(
        name=_static_text(f"{where}.name", spec["name"], ctx.scenario)
        if "name" in spec
        else url,
        url=compile_text(f"{where}.url", url, ctx.scenario),
        headers=_headers(f"{where}.headers", spec.get("headers", {}), ctx.scenario),
        join=_compile_message(f"{where}.join", spec["join"], ctx.scenario)
        if "join" in spec
        else None,
        hold=parse_duration(f"{where}.hold", spec.get("hold", 0)),
        reconnects=require_int(f"{where}.reconnects", spec.get("reconnects", 0), 0),
        connect_timeout=parse_duration(
            f"{where}.timeout", spec.get("timeout", "10s"), allow_zero=False
        ),
    )
    if "send" in spec:
        send = require_mapping(f"{where}.send", spec["send"])
        reject_unknown(f"{where}.send", send, ("every", "count", "message"))
        if "message" not in send:
            raise ScenarioError(f"{where}.send.message", "is required")
        plan.every = parse_duration(f"{where}.send.every", send.get("every", "1s"))
        plan.count = require_int(f"{where}.send.count", send.get("count", 1), 1)
        plan.message = _compile_message(
            f"{where}.send.message", send["message"], ctx.scenario
        )
    if "expect" in spec:
        expect = require_mapping(f"{where}.expect", spec["expect"])
        reject_unknown(f"{where}.expect", expect, ("count", "timeout"))
        plan.expect_count = require_int(f"{where}.expect.count", expect.get("count"), 1)
        plan.expect_timeout = parse_duration(
            f"{where}.expect.timeout", expect.get("timeout", "10s"), allow_zero=False
        )
    if "latency_field" in spec:
        plan.latency_field = require_text(
            f"{where}.latency_field", spec["latency_field"]
        )
    group = ctx.group or None

    async def ws_step(vu: VU) -> None:
        await run_ws_plan(vu, plan, group)

    return ws_step
