"""Steps: every bad field is a ScenarioError naming it; compiled steps run against
a real aiohttp server on 127.0.0.1 and record k6's metrics, checks and captures."""

import asyncio
import logging
import textwrap

import pytest
from aiohttp import web
from local_app import LocalApp

from chaospika._ports import free_port
from chaospika.loadengine.checks import compile_jsonpath
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.steps import compile_exec, compile_steps
from chaospika.loadengine.vu import VU

FIELD = "scenarios.shop.steps"
URL = "http://127.0.0.1:9/x"


def compile_one(step):
    return compile_steps(FIELD, [step], scenario="shop")


BAD_STEPS = [
    ({"jump": 1}, "steps[0].jump"),
    ({"think": "1s", "request": {"url": URL}}, "steps[0]"),
    ("GET /", "steps[0]"),
    ({"request": {}}, "steps[0].request.url"),
    ({"request": {"url": URL, "method": "FETCH"}}, "steps[0].request.method"),
    ({"request": {"url": "ftp://127.0.0.1/x"}}, "steps[0].request.url"),
    ({"request": {"url": "http://{{var.host}}/x"}}, "steps[0].request.url"),
    ({"request": {"url": "http://127.0.0.1/a b"}}, "steps[0].request.url"),
    ({"request": {"url": "http://127.0.0.1/{{oops}}"}}, "steps[0].request.url"),
    ({"request": {"url": URL, "headers": ["a"]}}, "steps[0].request.headers"),
    (
        {"request": {"url": URL, "headers": {"Bad Name": "1"}}},
        "request.headers.Bad Name",
    ),
    (
        {"request": {"url": URL, "headers": {"X": "a\r\nB: c"}}},
        "steps[0].request.headers.X",
    ),
    ({"request": {"url": URL, "json": {}, "body": "x"}}, "steps[0].request.body"),
    ({"request": {"url": URL, "body": {"a": 1}}}, "steps[0].request.body"),
    ({"request": {"url": URL, "timeout": "10 sec"}}, "steps[0].request.timeout"),
    ({"request": {"url": URL, "timeout": 0}}, "steps[0].request.timeout"),
    ({"request": {"url": URL, "retries": 3}}, "steps[0].request.retries"),
    ({"request": {"url": URL, "name": "n-{{vu}}"}}, "steps[0].request.name"),
    ({"request": {"url": URL, "tags": {"t": [1]}}}, "steps[0].request.tags.t"),
    (
        {"request": {"url": URL, "expectedStatuses": [99]}},
        "request.expectedStatuses[0]",
    ),
    (
        {"request": {"url": URL, "expectedStatuses": [{"min": 500, "max": 400}]}},
        "steps[0].request.expectedStatuses[0]",
    ),
    ({"request": {"url": URL}, "checks": {"status": 200}}, "steps[0].checks"),
    ({"request": {"url": URL}, "checks": [{}]}, "steps[0].checks[0]"),
    (
        {"request": {"url": URL}, "checks": [{"status": 200, "body_contains": "a"}]},
        "checks[0]",
    ),
    (
        {"request": {"url": URL}, "checks": [{"status": "ok"}]},
        "steps[0].checks[0].status",
    ),
    ({"request": {"url": URL}, "checks": [{"status": [200, 7]}]}, "checks[0].status"),
    (
        {"request": {"url": URL}, "checks": [{"jsonpath": "a.b", "exists": True}]},
        "jsonpath",
    ),
    (
        {"request": {"url": URL}, "checks": [{"jsonpath": "$.a..b", "exists": True}]},
        "jsonpath",
    ),
    ({"request": {"url": URL}, "checks": [{"jsonpath": "$.a"}]}, "steps[0].checks[0]"),
    ({"request": {"url": URL}, "checks": [{"jsonpath": "$.a", "exists": 1}]}, "exists"),
    ({"request": {"url": URL}, "checks": [{"status": 200, "why": 1}]}, "checks[0].why"),
    ({"request": {"url": URL}, "checks": [{"body_contains": ""}]}, "body_contains"),
    ({"request": {"url": URL}, "captures": [{"jsonpath": "$.id"}]}, "captures[0].name"),
    (
        {
            "request": {"url": URL},
            "captures": [{"name": "a", "jsonpath": "$.a", "header": "H"}],
        },
        "steps[0].captures[0]",
    ),
    (
        {"request": {"url": URL}, "captures": [{"name": "a", "jsonpath": "id"}]},
        "jsonpath",
    ),
    ({"think": "soon"}, "steps[0].think"),
    ({"think": -1}, "steps[0].think"),
    ({"think": {"min": "2s", "max": "1s"}}, "steps[0].think.max"),
    ({"think": {"min": "1s"}}, "steps[0].think"),
    ({"ws": {"url": "http://127.0.0.1/ws"}}, "steps[0].ws.url"),
    (
        {"ws": {"url": "ws://127.0.0.1/ws", "send": {"count": 2}}},
        "steps[0].ws.send.message",
    ),
    (
        {"ws": {"url": "ws://127.0.0.1/ws", "send": {"count": 0, "message": "m"}}},
        "send.count",
    ),
    (
        {"ws": {"url": "ws://127.0.0.1/ws", "expect": {"timeout": "1s"}}},
        "ws.expect.count",
    ),
    ({"ws": {"url": "ws://127.0.0.1/ws", "reconnects": -1}}, "steps[0].ws.reconnects"),
    ({"ws": {"url": "ws://127.0.0.1/ws", "hold": "long"}}, "steps[0].ws.hold"),
    ({"ws": {"url": "ws://127.0.0.1/ws", "ping": True}}, "steps[0].ws.ping"),
    ({"group": "g"}, "steps[0].steps"),
    ({"group": "a::b", "steps": [{"think": 0}]}, "steps[0].group"),
    (
        {"group": "g", "steps": [{"request": {"url": "nope"}}]},
        "steps[0].steps[0].request.url",
    ),
]


@pytest.mark.parametrize(("step", "field_end"), BAD_STEPS)
def test_every_bad_field_is_named(step, field_end):
    with pytest.raises(ScenarioError) as caught:
        compile_one(step)
    assert caught.value.field.startswith(FIELD)
    assert caught.value.field.endswith(field_end), caught.value


@pytest.mark.parametrize("steps", [[], {"request": {"url": URL}}, None])
def test_steps_must_be_a_non_empty_list(steps):
    with pytest.raises(ScenarioError) as caught:
        compile_steps(FIELD, steps, scenario="shop")
    assert caught.value.field == FIELD


def test_jsonpath_subset():
    assert compile_jsonpath("f", "$.a.b[0]['c d'][-1]") == ("a", "b", 0, "c d", -1)
    assert compile_jsonpath("f", "$") == ()


class Shop(LocalApp):
    """A tiny orders API on a free loopback port that remembers what it received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list = []
        self.created = 0
        self.peers: set = set()
        app = web.Application()
        app.router.add_post("/orders", self.create)
        app.router.add_get("/orders/{id}", self.read)
        app.router.add_get("/fail", self.fail)
        self.runner = web.AppRunner(app)

    async def create(self, request: web.Request) -> web.Response:
        self.peers.add(request.transport.get_extra_info("peername"))
        body = await request.json()
        self.received.append((body, dict(request.headers)))
        self.created += 1
        order_id = f"o-{self.created}"
        return web.json_response(
            {"order_id": order_id, "qty": body["qty"]},
            status=201,
            headers={"Location": f"/orders/{order_id}"},
        )

    async def read(self, request: web.Request) -> web.Response:
        self.peers.add(request.transport.get_extra_info("peername"))
        self.received.append(("read", request.match_info["id"]))
        return web.json_response({"order_id": request.match_info["id"]})

    async def fail(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def iterate(iteration, vus, times):
    """Run `times` iterations on each VU, the way an executor does (iteration++)."""

    async def loop(vu):
        for _ in range(times):
            await iteration(vu)
            vu.iteration += 1

    await asyncio.gather(*(loop(vu) for vu in vus))
    for vu in vus:
        await vu.close()


ORDER_STEPS = [
    {
        "request": {
            "method": "POST",
            "url": "{{env.SHOP_URL}}/orders",
            "headers": {"Idempotency-Key": "{{uuid}}", "X-VU": "{{vu}}"},
            "json": {"qty": "{{randint:2-2}}", "user": "user-{{vu}}-{{iter}}"},
            "name": "create order",
        },
        "checks": [
            {"status": [201]},
            {"jsonpath": "$.order_id", "exists": True},
            {"jsonpath": "$.qty", "equals": 2},
            {"body_contains": "order_id"},
        ],
        "captures": [
            {"name": "order_id", "jsonpath": "$.order_id"},
            {"name": "location", "header": "Location"},
        ],
    },
    {"think": {"min": "1ms", "max": "5ms"}},
    {
        "group": "read back",
        "steps": [
            {
                "request": {"url": "{{env.SHOP_URL}}/orders/{{var.order_id}}"},
                "checks": [
                    {
                        "jsonpath": "$.order_id",
                        "equals": "{{var.order_id}}",
                        "name": "same id",
                    }
                ],
            }
        ],
    },
]


def test_steps_run_against_a_real_server(monkeypatch):
    async def scenario():
        async with Shop() as shop:
            monkeypatch.setenv("SHOP_URL", shop.url)
            registry = Registry()
            registry.submetric("http_reqs{name:create order}")
            registry.submetric(f"http_reqs{{url:{shop.url}/orders/o-1}}")
            iteration = compile_steps(FIELD, ORDER_STEPS, scenario="shop")
            captures: dict = {}
            vus = [VU(n, "shop", registry, captures, {"env": "test"}) for n in (1, 2)]
            await iterate(iteration, vus, 3)
            return shop, registry, captures

    shop, registry, captures = run(scenario())
    created = [entry for entry in shop.received if entry[0] != "read"]
    reads = [entry for entry in shop.received if entry[0] == "read"]
    assert len(created) == 6 and len(reads) == 6
    bodies = [body for body, _ in created]
    assert all(body["qty"] == 2 for body in bodies)  # a number, not "2"
    assert {body["user"] for body in bodies} == {
        f"user-{v}-{i}" for v in (1, 2) for i in range(3)
    }
    keys = {headers["Idempotency-Key"] for _, headers in created}
    assert len(keys) == 6
    assert len(shop.peers) == 2  # one keep-alive connection per VU
    assert sorted(captures["order_id"]) == sorted(f"o-{n}" for n in range(1, 7))
    assert all(value.startswith("/orders/o-") for value in captures["location"])
    assert registry.stats("checks")["rate"] == 1.0
    assert registry.stats("checks")["passes"] == 6 * 5
    assert ("::read back", "same id") in registry.checks
    assert registry.stats("http_reqs")["count"] == 12
    assert registry.stats("http_reqs{name:create order}")["count"] == 6
    assert registry.stats(f"http_reqs{{url:{shop.url}/orders/o-1}}")["count"] == 1
    assert registry.stats("http_req_failed")["rate"] == 0


def test_failed_checks_expected_statuses_and_refused_connections():
    async def scenario():
        async with Shop() as shop:
            registry = Registry()
            steps = [
                {"request": {"url": f"{shop.url}/fail"}, "checks": [{"status": 200}]},
                {"request": {"url": f"{shop.url}/fail"}, "checks": [{"status": [500]}]},
                {
                    "request": {
                        "url": f"{shop.url}/fail",
                        "expectedStatuses": [{"min": 500, "max": 503}],
                    }
                },
                {
                    "request": {
                        "url": f"http://127.0.0.1:{free_port()}/",
                        "timeout": "2s",
                    },
                    "checks": [
                        {"jsonpath": "$.x", "exists": False},
                        {"body_contains": "x"},
                    ],
                },
            ]
            iteration = compile_steps(FIELD, steps, scenario="shop")
            await iterate(iteration, [VU(1, "shop", registry, {}, {})], 1)
            return registry

    registry = run(scenario())
    assert registry.stats("http_reqs")["count"] == 4
    # failed: both 500s not in expectedStatuses (a check accepting 500 does not make
    # it expected: k6 decides by expectedStatuses only) and the refused connection
    assert registry.stats("http_req_failed") == {"rate": 0.75, "passes": 3, "fails": 1}
    checks = registry.stats("checks")
    assert (checks["passes"], checks["fails"]) == (2, 2)


def test_missing_var_ends_the_iteration_with_a_warning(caplog):
    async def scenario():
        async with Shop() as shop:
            steps = [
                {"request": {"url": f"{shop.url}/orders/{{{{var.never}}}}"}},
                {
                    "request": {
                        "method": "POST",
                        "url": f"{shop.url}/orders",
                        "json": {"qty": 1},
                    }
                },
            ]
            registry = Registry()
            iteration = compile_steps(FIELD, steps, scenario="shop")
            await iterate(iteration, [VU(1, "shop", registry, {}, {})], 2)
            return shop, registry

    with caplog.at_level(logging.WARNING, logger="chaostoolkit"):
        shop, registry = run(scenario())
    assert shop.received == []
    assert registry.stats("http_reqs")["count"] == 0
    assert "var.never" in caplog.text


def test_exec_escape_hatch(tmp_path, monkeypatch):
    module = tmp_path / "pika_exec_mod.py"
    module.write_text(
        textwrap.dedent(
            """
            async def shop(vu):
                response = await vu.http.request(
                    "POST", vu.vars["url"] + "/orders", json={"qty": vu.id}, name="exec"
                )
                vu.check("created", response.status == 201)
                vu.capture("order_id", response.json()["order_id"])

            def not_async(vu):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    function = compile_exec("scenarios.x.exec", "pika_exec_mod:shop")

    async def scenario():
        async with Shop() as shop:
            registry = Registry()
            captures: dict = {}
            vu = VU(3, "x", registry, captures, {})
            vu.vars["url"] = shop.url
            await iterate(function, [vu], 2)
            return shop, registry, captures

    shop, registry, captures = run(scenario())
    assert [body for body, _ in shop.received] == [{"qty": 3}, {"qty": 3}]
    assert captures == {"order_id": ["o-1", "o-2"]}
    assert registry.stats("checks")["rate"] == 1.0
    assert registry.stats("http_reqs")["count"] == 2

    for reference, message in [
        ("pika_exec_mod", "module:function"),
        ("no_such_module_pika:f", "cannot import"),
        ("pika_exec_mod:missing", "has no 'missing'"),
        ("pika_exec_mod:not_async", "async def"),
    ]:
        with pytest.raises(ScenarioError, match=message) as caught:
            compile_exec("scenarios.x.exec", reference)
        assert caught.value.field == "scenarios.x.exec"


def test_dynamic_url_without_name_tags_the_rendered_url():
    async def scenario():
        async with Shop() as shop:
            registry = Registry()
            registry.submetric(f"http_reqs{{url:{shop.url}/orders/v2}}")
            registry.submetric(f"http_reqs{{name:{shop.url}/orders/v{{{{vu}}}}}}")
            steps = [{"request": {"url": f"{shop.url}/orders/v{{{{vu}}}}"}}]
            iteration = compile_steps(FIELD, steps, scenario="shop")
            await iterate(
                iteration, [VU(n, "shop", registry, {}, {}) for n in (1, 2)], 2
            )
            return shop, registry

    shop, registry = run(scenario())
    assert sorted(shop.received) == [("read", "v1")] * 2 + [("read", "v2")] * 2
    assert registry.stats(f"http_reqs{{url:{shop.url}/orders/v2}}")["count"] == 2
    assert (
        registry.stats(f"http_reqs{{name:{shop.url}/orders/v{{{{vu}}}}}}")["count"] == 4
    )


def test_env_url_without_name_is_tagged_resolved(monkeypatch):
    async def scenario():
        async with Shop() as shop:
            monkeypatch.setenv("SHOP_URL", shop.url)
            registry = Registry()
            registry.submetric(f"http_reqs{{name:{shop.url}/orders/7}}")
            registry.submetric(f"http_reqs{{url:{shop.url}/orders/7}}")
            steps = [{"request": {"url": "{{env.SHOP_URL}}/orders/7"}}]
            iteration = compile_steps(FIELD, steps, scenario="shop")
            await iterate(iteration, [VU(1, "shop", registry, {}, {})], 3)
            return shop, registry

    shop, registry = run(scenario())
    assert shop.received == [("read", "7")] * 3
    assert registry.stats(f"http_reqs{{name:{shop.url}/orders/7}}")["count"] == 3
    assert registry.stats(f"http_reqs{{url:{shop.url}/orders/7}}")["count"] == 3
