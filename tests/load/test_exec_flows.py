"""`exec` for flows JSON cannot express: seed 003's JWT stress against a real service.

The flow (jwt_flow.py) logs in, calls five times with the access token, refreshes,
calls with the new token, and checks that the used refresh token is refused. The
thresholds are the seed's success criteria, on sub-metrics tagged by request name.
"""

import asyncio

import jwt_flow
import pytest
from jwt_flow import CALLS_PER_LOGIN, JwtService

from chaospika._ports import free_port
from chaospika.loadengine import run_async

pytestmark = pytest.mark.timeout(60)

SEED_003_CRITERIA = {
    "http_req_duration{name:login}": ["p(95)<200"],
    "http_req_duration{name:verify}": ["p(95)<50"],
    "http_req_failed": ["rate<0.05"],
    "checks": ["rate==1"],
}
REQUEST_NAMES = ("login", "verify", "refresh", "refresh-reuse")


def jwt_spec(vus: int = 8, duration: str = "1s") -> dict:
    return {
        "scenarios": {
            "jwt": {
                "executor": "constant-vus",
                "vus": vus,
                "duration": duration,
                "exec": "jwt_flow:login_calls_refresh",
            }
        },
        "thresholds": {
            **SEED_003_CRITERIA,
            # tracked from the start, so the tests can count them
            **{f"http_reqs{{name:{name}}}": ["count>0"] for name in REQUEST_NAMES},
        },
    }


def run_against(service: JwtService, spec: dict, monkeypatch):
    monkeypatch.setenv(jwt_flow.BASE_URL_ENV, f"http://127.0.0.1:{service.port}")

    async def scenario():
        async with service:
            return await run_async(spec)

    return asyncio.run(scenario())


def count(result, selector: str) -> float:
    return result.registry.stats(selector)["count"]


def test_login_calls_refresh_meets_the_seed_criteria(monkeypatch):
    service = JwtService(free_port())
    result = run_against(service, jwt_spec(), monkeypatch)

    assert result.thresholds_passed is True, result.thresholds
    logins = count(result, "http_reqs{name:login}")
    assert logins == service.logins == count(result, "iterations") > 8
    # every iteration ran to its end: 5 calls, a refresh, 1 call, a refused reuse
    assert count(result, "http_reqs{name:verify}") == (CALLS_PER_LOGIN + 1) * logins
    assert count(result, "http_reqs{name:refresh}") == logins
    assert count(result, "http_reqs{name:refresh-reuse}") == logins
    assert result.registry.stats("http_req_failed")["passes"] == 0
    assert service.refresh_tokens and len(service.refresh_tokens) == logins


def test_expired_tokens_fail_the_checks_and_the_thresholds(monkeypatch):
    service = JwtService(free_port(), ttl=0.0)  # every access token is born expired
    result = run_against(service, jwt_spec(vus=2), monkeypatch)

    assert result.thresholds_passed is False
    assert result.thresholds["http_req_duration{name:verify}"] == {"p(95)<50": True}
    assert result.thresholds["checks"] == {"rate==1": False}
    assert result.thresholds["http_req_failed"] == {"rate<0.05": False}
    verify = count(result, "http_reqs{name:verify}")
    failed = result.registry.stats("http_req_failed")["passes"]
    assert verify > 0 and failed == verify  # only the token calls failed
