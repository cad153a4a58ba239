"""k6's group_duration for group steps, and the cap on captured values, against a
real aiohttp server on 127.0.0.1."""

import asyncio
import itertools
import logging
import pickle

import pytest
from aiohttp import web
from local_app import LocalApp

from chaospika._ports import free_port
from chaospika.loadengine import run as run_load
from chaospika.loadengine import vu as vu_module
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.steps import compile_steps
from chaospika.loadengine.vu import VU, CaptureList, capture_warnings, merge_captures

FIELD = "scenarios.shop.steps"


class IdServer(LocalApp):
    """GET /id answers {"id": n} with n counting up from 1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ids = itertools.count(1)
        app = web.Application()
        app.router.add_get("/id", self.next_id)
        self.runner = web.AppRunner(app)

    async def next_id(self, request: web.Request) -> web.Response:
        return web.json_response({"id": next(self.ids)})


def trend(registry: Registry, selector: str) -> dict:
    return registry.stats(selector, trend_stats=["count", "min", "max"])


def test_each_group_execution_records_group_duration():
    registry = Registry()
    for selector in (
        "group_duration{group:::checkout}",
        "group_duration{group:::checkout::pay}",
        "group_duration{scenario:shop}",
        "http_reqs{group:::checkout::pay}",
    ):
        registry.submetric(selector)

    async def scenario() -> None:
        async with IdServer() as server:
            steps = [
                {
                    "group": "checkout",
                    "steps": [
                        {"think": "20ms"},
                        {
                            "group": "pay",
                            "steps": [{"request": {"url": f"{server.url}/id"}}],
                        },
                    ],
                },
                {"request": {"url": f"{server.url}/id"}},
            ]
            iteration = compile_steps(FIELD, steps, scenario="shop")
            vu = VU(1, "shop", registry, {})
            for _ in range(3):
                await iteration(vu)
            await vu.close()

    asyncio.run(scenario())
    outer = trend(registry, "group_duration{group:::checkout}")
    inner = trend(registry, "group_duration{group:::checkout::pay}")
    assert outer["count"] == 3 and inner["count"] == 3
    assert outer["min"] >= 20 and outer["min"] > inner["min"]
    assert trend(registry, "group_duration{scenario:shop}")["count"] == 6
    assert registry.stats("http_reqs{group:::checkout::pay}")["count"] == 3
    assert registry.stats("http_reqs")["count"] == 6
    assert {"::checkout", "::checkout::pay"} <= set(registry.groups)


def test_a_group_stopped_by_an_error_still_records_its_duration(caplog):
    registry = Registry()
    steps = [
        {
            "group": "needs-var",
            "steps": [{"request": {"url": "http://127.0.0.1:9/{{var.never}}"}}],
        }
    ]
    iteration = compile_steps(FIELD, steps, scenario="shop")

    async def scenario() -> None:
        vu = VU(1, "shop", registry, {})
        await iteration(vu)
        await vu.close()

    with caplog.at_level(logging.WARNING, logger="chaostoolkit"):
        asyncio.run(scenario())
    assert "var.never" in caplog.text
    assert trend(registry, "group_duration")["count"] == 1
    assert registry.stats("http_reqs")["count"] == 0


def test_captures_are_capped_counted_and_warned_once(monkeypatch, caplog):
    monkeypatch.setattr(vu_module, "CAPTURE_LIMIT", 3)

    async def scenario():
        async with IdServer() as server:
            spec = {
                "scenarios": {
                    "shop": {
                        "executor": "per-vu-iterations",
                        "vus": 1,
                        "iterations": 5,
                        "steps": [
                            {
                                "request": {"url": f"{server.url}/id"},
                                "captures": [{"name": "id", "jsonpath": "$.id"}],
                            },
                            {"request": {"url": f"{server.url}/id?{{{{var.id}}}}"}},
                        ],
                    }
                }
            }
            return await asyncio.to_thread(run_load, spec)

    with caplog.at_level(logging.WARNING, logger="chaostoolkit"):
        result = asyncio.run(scenario())
    assert result.captures["shop"]["id"] == [1, 3, 5]
    assert result.captures["shop"]["id"].dropped == 2
    assert result.registry.stats("http_reqs")["count"] == 10  # vars still updated
    assert "capture shop.id: 2 values dropped (over 3 kept)" in result.warnings
    assert caplog.text.count("capture shop.id: more than 3 values") == 1


def test_worker_captures_merge_within_the_cap(monkeypatch, caplog):
    monkeypatch.setattr(vu_module, "CAPTURE_LIMIT", 3)
    first = CaptureList([1, 2, 3])
    first.dropped = 4  # dropped in a worker process
    first = pickle.loads(pickle.dumps(first))  # as sent by a worker process
    merged: dict = {}
    with caplog.at_level(logging.WARNING, logger="chaostoolkit"):
        merge_captures(merged, {"id": [7, 8]}, "shop")
        merge_captures(merged, {"id": first, "other": [9]}, "shop")
    assert merged["id"] == [7, 8, 1] and merged["id"].dropped == 2 + 4
    assert merged["other"] == [9] and merged["other"].dropped == 0
    assert caplog.text.count("capture shop.id") == 1
    assert capture_warnings({"shop": merged}) == [
        "capture shop.id: 6 values dropped (over 3 kept)"
    ]


@pytest.mark.parametrize("values", [0, 3])
def test_no_warning_without_drops(monkeypatch, values):
    monkeypatch.setattr(vu_module, "CAPTURE_LIMIT", 3)
    captures: dict = {}
    vu = VU(1, "shop", Registry(), captures)
    for value in range(values):
        vu.capture("id", value)
    assert capture_warnings({"shop": captures}) == []
    assert captures.get("id", []) == list(range(values))
