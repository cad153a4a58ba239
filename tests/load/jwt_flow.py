"""Seed 003's JWT stress flow as an `exec` function, and a small JWT service for it.

`login_calls_refresh` is what `"exec": "jwt_flow:login_calls_refresh"` runs for each
iteration: log in, make five authenticated calls, refresh the token, call once
more with the new one. JSON steps cannot express it: the token of one response
goes into the header of the next, and a refresh token may be used only once.
The service is a real aiohttp app whose tokens are HMAC-signed and expire.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import time

from aiohttp import web
from local_app import LocalApp

BASE_URL_ENV = "JWT_BASE_URL"  # where the flow sends its requests
CALLS_PER_LOGIN = 5


async def login_calls_refresh(vu) -> None:
    """One user session: login -> 5 authenticated calls -> refresh -> 1 call."""
    base = os.environ[BASE_URL_ENV]
    user = f"user{vu.id}"
    login = await vu.http.request(
        "POST",
        f"{base}/auth/login",
        json={"user": user, "password": f"pw-{user}"},
        name="login",
    )
    if not vu.check("login answered 200", login.status == 200):
        return
    tokens = login.json()
    for _ in range(CALLS_PER_LOGIN):
        await _call_as(vu, base, tokens["access"], user)
    refresh = await vu.http.request(
        "POST",
        f"{base}/auth/refresh",
        json={"refresh": tokens["refresh"]},
        name="refresh",
    )
    if vu.check("refresh answered 200", refresh.status == 200):
        await _call_as(vu, base, refresh.json()["access"], user)
    reused = await vu.http.request(
        "POST",
        f"{base}/auth/refresh",
        json={"refresh": tokens["refresh"]},
        name="refresh-reuse",
        expected_statuses=[401],
    )
    vu.check("a used refresh token is refused", reused.status == 401)


async def _call_as(vu, base: str, access: str, user: str) -> None:
    response = await vu.http.request(
        "GET",
        f"{base}/api/me",
        headers={"Authorization": f"Bearer {access}"},
        name="verify",
    )
    vu.check(
        "token accepted for its own user",
        response.status == 200 and response.json().get("user") == user,
    )


class JwtService(LocalApp):
    """HMAC-signed access tokens (`ttl` s) and single-use refresh tokens."""

    def __init__(self, port: int, ttl: float = 60.0) -> None:
        self.port = port
        self.ttl = ttl
        self.key = secrets.token_bytes(32)
        self.refresh_tokens: dict[str, str] = {}  # token -> user, removed when used
        self.logins = 0
        app = web.Application()
        app.router.add_post("/auth/login", self.login)
        app.router.add_post("/auth/refresh", self.refresh)
        app.router.add_get("/api/me", self.me)
        self.runner = web.AppRunner(app)

    def _token(self, user: str) -> str:
        claims = json.dumps({"sub": user, "exp": time.time() + self.ttl}).encode()
        body = base64.urlsafe_b64encode(claims).decode()
        signature = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{signature}"

    def _user_of(self, token: str) -> str | None:
        """The user of a valid, unexpired token, else None."""
        body, _, signature = token.partition(".")
        expected = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return None
        claims = json.loads(base64.urlsafe_b64decode(body))  # signed: well formed
        return claims["sub"] if claims["exp"] > time.time() else None

    def _issue(self, user: str) -> dict:
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens[refresh] = user
        return {"access": self._token(user), "refresh": refresh}

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("password") != f"pw-{body.get('user')}":
            return web.json_response({"error": "bad credentials"}, status=401)
        self.logins += 1
        return web.json_response(self._issue(body["user"]))

    async def refresh(self, request: web.Request) -> web.Response:
        user = self.refresh_tokens.pop((await request.json()).get("refresh"), None)
        if user is None:
            return web.json_response({"error": "unknown refresh token"}, status=401)
        return web.json_response(self._issue(user))

    async def me(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = self._user_of(token) if scheme == "Bearer" else None
        if user is None:
            return web.json_response({"error": "invalid token"}, status=401)
        return web.json_response({"user": user})
