"""Redirects, k6's way: every hop is a request sample, the last response is the
one checks and captures see, against real aiohttp servers on 127.0.0.1."""

import asyncio
import json
import logging

import pytest
from aiohttp import web
from local_app import LocalApp

from chaospika._ports import free_port
from chaospika.loadengine import run as run_load
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.http1 import Origin, Response, next_hop
from chaospika.loadengine.k6.script import translate
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.scenario import parse_spec
from chaospika.loadengine.steps import compile_steps
from chaospika.loadengine.vu import VU

FIELD = "scenarios.web.steps"


def run(coro):
    with asyncio.Runner() as runner:
        return runner.run(asyncio.wait_for(coro, 20))


class RedirectServer(LocalApp):
    """Redirect chains on a free loopback port; /final echoes what it got.

    /chain/{code}/{n}: `code` to /chain/{code}/{n-1} (a relative Location), and
    at 0 to /final; /loop: 302 to itself; /away: 307 to `other`'s /final (an
    absolute Location); /bare: 302 without Location.
    """

    def __init__(self, other: "RedirectServer | None" = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.other = other
        self.peers: set = set()
        self.hits = 0
        app = web.Application()
        app.router.add_route("*", "/chain/{code}/{n}", self.chain)
        app.router.add_route("*", "/loop", self.loop)
        app.router.add_route("*", "/away", self.away)
        app.router.add_route("*", "/bare", self.bare)
        app.router.add_route("*", "/final", self.final)
        self.runner = web.AppRunner(app)

    def _seen(self, request: web.Request) -> None:
        self.hits += 1
        self.peers.add(request.transport.get_extra_info("peername"))

    async def chain(self, request: web.Request) -> web.Response:
        self._seen(request)
        code, hops = int(request.match_info["code"]), int(request.match_info["n"])
        location = f"{hops - 1}" if hops > 1 else "/final"
        return web.Response(status=code, headers={"Location": location})

    async def loop(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=302, headers={"Location": "/loop"})

    async def away(self, request: web.Request) -> web.Response:
        self._seen(request)
        target = f"{self.other.url}/final?from=away"
        return web.Response(status=307, headers={"Location": target})

    async def bare(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=302, text="no location")

    async def final(self, request: web.Request) -> web.Response:
        self._seen(request)
        seen = {
            "method": request.method,
            "body": await request.text(),
            "host": request.headers.get("Host"),
            "auth": request.headers.get("Authorization"),
            "referer": request.headers.get("Referer"),
            "query": request.query_string,
        }
        return web.json_response(seen)


def request_step(url: str, **extra) -> dict:
    request = {"url": url, **extra.pop("request", {})}
    return {"request": request, **extra}


async def run_steps(steps: list, registry: Registry, max_redirects=None) -> VU:
    """One iteration of `steps` on a fresh VU; returns the VU (its vars)."""
    iteration = compile_steps(FIELD, steps, scenario="web")
    vu = VU(1, "web", registry, {}, max_redirects=max_redirects)
    try:
        await iteration(vu)
    finally:
        await vu.close()
    return vu


def count(registry: Registry, selector: str) -> int:
    return int(registry.stats(selector, trend_stats=["count"])["count"])


def with_submetrics(*selectors: str) -> Registry:
    registry = Registry()
    for selector in selectors:
        registry.submetric(selector)
    return registry


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_each_status_follows_and_records_every_hop(code):
    registry = with_submetrics(
        f"http_reqs{{status:{code}}}",
        "http_reqs{status:200}",
        "http_reqs{method:POST}",
        "http_reqs{method:GET}",
    )
    keeps = code in (307, 308)  # 301/302/303 turn the POST into a GET, no body
    final_method = "POST" if keeps else "GET"
    step = request_step(
        "",
        request={"method": "POST", "body": "payload"},
        checks=[
            {"status": 200},
            {"jsonpath": "$.method", "equals": final_method},
            {"jsonpath": "$.body", "equals": "payload" if keeps else ""},
        ],
        captures=[{"name": "seen", "jsonpath": "$.method"}],
    )

    async def scenario() -> VU:
        async with RedirectServer() as server:
            step["request"]["url"] = f"{server.url}/chain/{code}/2"
            return await run_steps([step], registry)

    vu = run(scenario())
    assert vu.vars["seen"] == final_method
    assert count(registry, "http_reqs") == 3
    assert count(registry, f"http_reqs{{status:{code}}}") == 2
    assert count(registry, "http_reqs{status:200}") == 1
    assert count(registry, "http_reqs{method:POST}") == (3 if keeps else 1)
    assert count(registry, "http_reqs{method:GET}") == (0 if keeps else 2)
    assert registry.stats("checks")["rate"] == 1
    assert registry.stats("http_req_failed")["rate"] == 0
    assert count(registry, "http_req_duration") == 3


def test_308_keeps_method_body_and_same_host_credentials():
    async def scenario():
        async with RedirectServer() as server:
            vu = VU(1, "web", Registry(), {})
            response = await vu.http.request(
                "PUT",
                f"{server.url}/chain/308/1",
                json={"n": 1},
                headers={"Authorization": "Bearer t"},
            )
            await vu.close()
            return server, response

    server, response = run(scenario())
    seen = response.json()
    assert response.status == 200 and response.url == f"{server.url}/final"
    assert seen["method"] == "PUT" and json.loads(seen["body"]) == {"n": 1}
    assert seen["auth"] == "Bearer t"
    assert seen["referer"] == f"{server.url}/chain/308/1"
    assert len(server.peers) == 1  # one keep-alive connection for both hops


def test_absolute_location_to_another_origin_uses_its_connection():
    registry = with_submetrics("http_reqs{status:307}", "http_reqs{status:200}")

    async def scenario():
        async with RedirectServer() as other, RedirectServer(other) as server:
            vu = VU(1, "web", registry, {})
            responses = [
                await vu.http.request(
                    "POST",
                    f"{server.url}/away",
                    body="keep",
                    headers={"Authorization": "Bearer t"},
                )
                for _ in range(3)
            ]
            await vu.close()
            return server, other, responses

    server, other, responses = run(scenario())
    seen = responses[-1].json()
    assert seen["method"] == "POST" and seen["body"] == "keep"
    assert seen["host"] == f"127.0.0.1:{other.port}" and seen["query"] == "from=away"
    assert seen["auth"] == "Bearer t"  # same host name (Go ignores the port)
    assert responses[-1].url == f"{other.url}/final?from=away"
    assert (server.hits, other.hits) == (3, 3)
    assert len(server.peers) == 1 and len(other.peers) == 1
    assert count(registry, "http_reqs{status:307}") == 3
    assert count(registry, "http_reqs{status:200}") == 3


def test_credentials_stay_with_their_host_and_https_sends_no_referer_to_http():
    sent = (
        b"POST /a HTTP/1.1\r\nHost: a.test\r\nAuthorization: t\r\nCookie: c=1\r\n"
        b"X-Keep: 1\r\nContent-Length: 4\r\n\r\nbody"
    )
    moved = Response(
        302,
        [
            (
                b"HTTP/1.1 302 Found\r\nLocation: http://b.test/b\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
        ],
        (0,) * 6,
        0,
        0,
    )
    hop = next_hop(sent, "https://a.test/a", moved)
    assert hop.method == "GET" and hop.url == "http://b.test/b"
    assert hop.origin == Origin("http", "b.test", 80)
    assert hop.data == b"GET /b HTTP/1.1\r\nHost: b.test\r\nX-Keep: 1\r\n\r\n"
    assert next_hop(sent, "https://a.test/a", Response(200, [], (0,) * 6, 0, 0)) is None


def test_hops_are_named_by_their_url_unless_the_request_is_named():
    def scenario_for(name: str | None) -> tuple[Registry, str]:
        async def go():
            async with RedirectServer() as server:
                registry = with_submetrics(
                    f"http_reqs{{name:{server.url}/chain/302/1}}",
                    f"http_reqs{{name:{server.url}/final}}",
                    f"http_reqs{{url:{server.url}/final}}",
                    "http_reqs{name:named}",
                )
                extra = {"name": name} if name else {}
                step = request_step(f"{server.url}/chain/302/1", request=extra)
                await run_steps([step], registry)
                return registry, server.url

        return run(go())

    registry, url = scenario_for(None)
    assert count(registry, f"http_reqs{{name:{url}/chain/302/1}}") == 1
    assert count(registry, f"http_reqs{{name:{url}/final}}") == 1
    assert count(registry, f"http_reqs{{url:{url}/final}}") == 1
    registry, url = scenario_for("named")
    assert count(registry, "http_reqs{name:named}") == 2
    assert count(registry, f"http_reqs{{url:{url}/final}}") == 0


def test_a_loop_stops_after_the_default_10_with_k6s_warning(caplog):
    registry = with_submetrics("http_reqs{status:302}")
    step = request_step("", checks=[{"status": 302}])

    async def scenario():
        async with RedirectServer() as server:
            step["request"]["url"] = f"{server.url}/loop"
            await run_steps([step], registry)
            return server

    with caplog.at_level(logging.WARNING, logger="chaostoolkit"):
        server = run(scenario())
    assert server.hits == 11  # the request and 10 redirects
    assert count(registry, "http_reqs{status:302}") == 11
    assert registry.stats("checks")["rate"] == 1  # the last 3xx is the response
    assert registry.stats("http_req_failed")["rate"] == 0  # and no error
    assert "Stopped after 10 redirects" in caplog.text


@pytest.mark.parametrize(
    "spec_limit, step_limit, hits",
    [(3, None, 4), (0, None, 1), (None, 0, 1), (3, 1, 2), (0, 5, 6)],
)
def test_spec_limit_and_per_request_override(caplog, spec_limit, step_limit, hits):
    extra = {} if step_limit is None else {"redirects": step_limit}
    step = request_step("", request=extra, checks=[{"status": 302}])
    registry = Registry()

    async def scenario():
        async with RedirectServer() as server:
            step["request"]["url"] = f"{server.url}/loop"
            await run_steps([step], registry, spec_limit)
            return server

    with caplog.at_level(logging.WARNING, logger="chaostoolkit"):
        server = run(scenario())
    assert server.hits == hits
    assert count(registry, "http_reqs") == hits
    assert registry.stats("checks")["rate"] == 1
    assert "Stopped after" not in caplog.text  # a limit was given: k6 is silent


def test_exec_requests_follow_with_their_own_limit():
    async def scenario():
        async with RedirectServer() as server:
            vu = VU(1, "web", Registry(), {}, max_redirects=1)
            url = f"{server.url}/chain/302/3"
            stopped = await vu.http.request("GET", url)
            followed = await vu.http.request("GET", url, redirects=3)
            none = await vu.http.request("GET", url, redirects=0)
            head = await vu.http.request("HEAD", f"{server.url}/chain/301/1")
            bare = await vu.http.request("GET", f"{server.url}/bare")
            with pytest.raises(ValueError, match="redirects"):
                await vu.http.request("GET", url, redirects=-1)
            await vu.close()
            return server, stopped, followed, none, head, bare

    server, stopped, followed, none, head, bare = run(scenario())
    assert (stopped.status, stopped.url) == (302, f"{server.url}/chain/302/2")
    assert followed.status == 200 and followed.json()["method"] == "GET"
    assert (none.status, none.url) == (302, f"{server.url}/chain/302/3")
    assert head.status == 200 and head.url == f"{server.url}/final"  # HEAD stays
    assert bare.status == 302 and bare.text() == "no location"
    assert server.hits == 2 + 4 + 1 + 2 + 1


def test_a_spec_with_max_redirects_runs_and_translates_to_k6():
    async def scenario():
        async with RedirectServer() as server:
            spec = {
                "maxRedirects": 1,
                "scenarios": {
                    "web": {
                        "executor": "shared-iterations",
                        "iterations": 2,
                        "vus": 1,
                        "steps": [
                            request_step(
                                f"{server.url}/chain/302/1", checks=[{"status": 200}]
                            ),
                            request_step(
                                f"{server.url}/chain/302/1",
                                request={"redirects": 0},
                                checks=[{"status": 302}],
                            ),
                        ],
                    }
                },
            }
            result = await asyncio.to_thread(run_load, spec)
            return spec, result

    spec, result = run(scenario())
    assert result.registry.stats("http_reqs")["count"] == 2 * (2 + 1)
    assert result.registry.stats("checks")["rate"] == 1
    script = translate(spec)
    assert script.options["maxRedirects"] == 1
    assert "redirects: 0" in script.source


@pytest.mark.parametrize("value", [-1, "3", True, 1.5])
def test_bad_limits_are_named(value):
    step = request_step("http://127.0.0.1:9/x", request={"redirects": value})
    with pytest.raises(ScenarioError) as error:
        compile_steps(FIELD, [step], scenario="web")
    assert error.value.field == f"{FIELD}[0].request.redirects"
    spec = {
        "maxRedirects": value,
        "scenarios": {
            "web": {"executor": "shared-iterations", "steps": [{"think": 0}]}
        },
    }
    with pytest.raises(ScenarioError) as error:
        parse_spec(spec)
    assert error.value.field == "maxRedirects"
