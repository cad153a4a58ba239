"""WebSocket probes: what a real-time client feels (message latency, delivery, reconnects).

`message_latency` connects N subscribers and a publisher to a channel, publishes
M messages marked with a tag and measures, on one clock, how long each took to
reach each subscriber. `connection_flap` makes clients connect, subscribe and
disconnect in cycles (a reconnection storm). Both run on their own event loop,
so they also work from a background activity while a load runs; both are
bounded by `timeout` and return their figures with k6-style `thresholds`
judged. `scenarios_passed` reads the results recorded under a `name`.
"""

import asyncio
import json
import logging
import math
import re
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

from chaoslib import substitute
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from websockets.exceptions import ConnectionClosed

from chaospika import _records
from chaospika._secrets import redact_url
from chaospika._validate import (
    require_duration,
    require_int,
    require_text,
    require_url,
)
from chaospika.loadengine import WsClosed, WsSession
from chaospika.ws._conn import (
    ConnectFailed,
    StampedConnection,
    abort_all,
    ack_matcher,
    close_all,
    close_sessions,
    open_connection,
    open_session,
    subscribe,
    subscribe_session,
)
from chaospika.ws._measure import Measures, event_loop
from chaospika.ws._template import Template, compile_template, json_field

__all__ = ["connection_flap", "message_latency", "scenarios_passed"]

logger = logging.getLogger("chaostoolkit")

RECORD_KIND = "ws"
SCHEMES = ("ws", "wss")
MAX_SUBSCRIBERS = 10_000
MAX_MESSAGES = 100_000
DEFAULT_MESSAGES = 100
MAX_DELIVERIES = 100_000_000  # subscribers x messages: one bit each
MAX_CLIENTS = 10_000
MAX_CYCLES = 100_000
MAX_PADDING = 1024 * 1024
MAX_SECONDS = 24 * 3600.0
CONNECTING_AT_ONCE = 100  # handshakes in flight at a time
CLOSE_SECONDS = 2.0  # closing handshakes at the end, then connections are dropped
FOLD_EVERY = 0.05
MESSAGE_FIELDS = ("tag", "seq", "sent_ms", "sent_ns", "padding")
SUBSCRIBE_FIELDS = ("client",)
LATENCY_METRICS = (
    "message_latency_ms",
    "connect_ms",
    "success_rate",
    "delivery_rate",
    "connection_success",
    "failed_connections",
)
FLAP_METRICS = (
    "message_latency_ms",
    "connect_ms",
    "reconnect_ms",
    "success_rate",
    "connection_success",
    "cycle_success",
    "failed_connections",
)


# -- arguments -----------------------------------------------------------------------


def _ws_url(name: str, value: Any) -> str:
    require_url(name, value, SCHEMES)
    return value.strip()


def _json_argument(name: str, value: Any) -> Any:
    """A JSON value given as text that parses to an object or list is decoded."""
    if isinstance(value, str) and value.strip().startswith(("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _fill(value: Any, configuration: Configuration, secrets: Secrets) -> Any:
    """`${name}` forms that came in with a configuration value are filled too."""
    if value is None:
        return None
    return substitute(value, configuration or {}, secrets or {})


def _headers(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float)
        for k, v in value.items()
    ):
        raise ActivityFailed(
            f"argument 'headers' must map header names to values, got {value!r}"
        )
    return {key: str(item) for key, item in value.items()}


def _subscribe_template(value: Any) -> Template | None:
    if value is None:
        return None
    return compile_template("subscribe_message", value, SUBSCRIBE_FIELDS)


def _ack(value: Any) -> Callable[[Any], bool] | None:
    if value is not None and not isinstance(value, dict | str):
        raise ActivityFailed(
            "argument 'subscribe_ack' must be an object (the keys and values a JSON "
            f"reply must hold) or a text the reply contains, got {value!r}"
        )
    if isinstance(value, str) and not value:
        raise ActivityFailed("argument 'subscribe_ack' must not be empty")
    return ack_matcher(value)


def _apply_profile(
    arguments: dict[str, Any], profile: Any, profiles: Any
) -> dict[str, Any]:
    """The arguments with the overrides of `profiles[profile]` applied."""
    if profile is None:
        return arguments
    if not isinstance(profiles, dict) or not profiles:
        raise ActivityFailed(
            "argument 'profiles' must map profile names to argument overrides "
            "when 'profile' is given"
        )
    if profile not in profiles:
        raise ActivityFailed(
            f"argument 'profile' must be one of {', '.join(map(str, profiles))}; "
            f"got {profile!r}"
        )
    overrides = profiles[profile]
    if not isinstance(overrides, dict):
        raise ActivityFailed(
            f"argument 'profiles': {profile!r} must be an object of arguments"
        )
    unknown = sorted(set(overrides) - set(arguments))
    if unknown:
        raise ActivityFailed(
            f"argument 'profiles': {profile!r} sets {unknown[0]!r}, which is not an "
            f"argument of this probe"
        )
    return {**arguments, **overrides}


def _record(name: Any, result: dict) -> None:
    if name is not None:
        _records.put(RECORD_KIND, require_text("name", name), result)


def _run(coroutine: Any) -> Any:
    with asyncio.Runner(loop_factory=event_loop) as runner:
        return runner.run(coroutine)


def _first_failure(failures: Counter, messages: dict[str, str]) -> str | None:
    if not failures:
        return None
    kind = failures.most_common(1)[0][0]
    return messages.get(kind, kind)


# -- message_latency -----------------------------------------------------------------


class _LatencyRun:
    """One run of `message_latency` on the running loop."""

    def __init__(self, **settings: Any) -> None:
        self.__dict__.update(settings)
        self.measures = Measures(LATENCY_METRICS)
        self.run_id = uuid.uuid4().hex[:10]
        self.find_tags = re.compile(re.escape(f"ws-{self.run_id}-") + r"(\d+)").findall
        self.active = self.messages > 0
        self.sent = array("q", bytes(8 * self.messages))
        self.seen = bytearray((self.subscribers * self.messages + 7) // 8)
        self.counts = [0] * self.subscribers
        self.connected = [False] * self.subscribers
        self.subscribed = [False] * self.subscribers
        self.failures: Counter = Counter()
        self.failure_text: dict[str, str] = {}
        self.subscribe_failures = 0
        self.dropped = 0
        self.duplicates = 0
        self.received = 0
        self.others = 0
        self.delivered = 0
        self.published = 0
        self.expected: int | None = None
        self.publisher_error: str | None = None
        self.publisher_reply: str | None = None
        self.sessions: list[WsSession] = []
        self.stalled_connections: list[StampedConnection] = []
        self.stalled_ready = 0
        self.closing = False

    # -- connecting
    def _failed(self, error: ConnectFailed) -> None:
        self.failures[error.kind] += 1
        self.failure_text.setdefault(error.kind, str(error))
        self.measures.add("failed_connections", 1)
        self.measures.add("connection_success", 0)

    def _opened(self, ms: float) -> None:
        self.measures.add("connection_success", 1)
        self.measures.add("connect_ms", ms)

    async def _open(self, url: str) -> WsSession | None:
        async with self.gate:
            remaining = self.deadline - self.loop.time()
            try:
                session, ms = await open_session(
                    url,
                    self.headers,
                    min(self.connect_timeout, remaining),
                    self.measures.registry,
                )
            except ConnectFailed as error:
                self._failed(error)
                return None
        self._opened(ms)
        self.sessions.append(session)
        return session

    def _subscribe_text(self, index: int) -> str | None:
        if self.subscribe_message is None:
            return None
        return self.subscribe_message.render({"client": index})

    def _ready(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.all_ready.set()

    async def _subscriber(self, index: int) -> None:
        try:
            session = await self._open(self.url)
            if session is None:
                return
            self.connected[index] = True
            remaining = self.deadline - self.loop.time()
            try:
                await subscribe_session(
                    session,
                    self._subscribe_text(index),
                    self.ack,
                    min(self.connect_timeout, remaining),
                )
            except (TimeoutError, WsClosed):
                self.subscribe_failures += 1
                return
            self.subscribed[index] = True
            reader = self._tagged if self.active else self._timestamped
            session.listen(lambda message: reader(index, message))
            session.ended.add_done_callback(self._ended)
        finally:
            self._ready()

    def _ended(self, _: Any) -> None:
        if not self.closing:
            self.dropped += 1

    async def _stalled(self, index: int) -> None:
        try:
            async with self.gate:
                remaining = self.deadline - self.loop.time()
                try:
                    connection, ms = await open_connection(
                        self.url,
                        self.headers,
                        min(self.connect_timeout, remaining),
                        stalled=True,
                    )
                except ConnectFailed as error:
                    self._failed(error)
                    return
            self._opened(ms)
            self.stalled_connections.append(connection)
            remaining = self.deadline - self.loop.time()
            try:
                await subscribe(
                    connection,
                    self._subscribe_text(self.subscribers + index),
                    self.ack,
                    min(self.connect_timeout, remaining),
                )
            except (TimeoutError, ConnectionClosed):
                return
            connection.transport.pause_reading()
            self.stalled_ready += 1
        finally:
            self._ready()

    # -- receiving (in the transport's callback: `now` is when the message arrived)
    def _tagged(self, index: int, message: Any) -> None:
        now = time.perf_counter_ns()
        self.received += 1
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        found = self.find_tags(message)
        if not found:
            self.others += 1
            return
        sent, seen, messages = self.sent, self.seen, self.messages
        for text in found:
            seq = int(text)
            if seq >= messages or not sent[seq]:
                continue
            bit = index * messages + seq
            mask = 1 << (bit & 7)
            if seen[bit >> 3] & mask:
                self.duplicates += 1
                continue
            seen[bit >> 3] |= mask
            self.counts[index] += 1
            self.delivered += 1
            self.add_latency("message_latency_ms", (now - sent[seq]) / 1e6)
            if self.delivered == self.expected:
                self.all_delivered.set()

    def _timestamped(self, index: int, message: Any) -> None:
        now_ms = time.time() * 1000.0
        self.received += 1
        sent_at = self.read_field(message)
        if sent_at is None:
            self.others += 1
            return
        self.counts[index] += 1
        self.delivered += 1
        self.add_latency("message_latency_ms", now_ms - sent_at)

    # -- publishing
    def _publisher_reply(self, message: Any) -> None:
        if isinstance(message, str):
            self.publisher_reply = message[:300]

    async def _publish(self, session: WsSession) -> None:
        loop = self.loop
        start = loop.time()
        interval = self.interval
        render = self.template.render
        values = {"padding": "x" * self.padding}
        for seq in range(self.messages):
            due = start + seq * interval
            if due >= self.deadline:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif seq % 64 == 63:
                await asyncio.sleep(0)
            wall = time.time_ns()
            mono = time.perf_counter_ns()
            values["seq"] = seq
            values["tag"] = f"ws-{self.run_id}-{seq}"
            values["sent_ns"] = wall
            values["sent_ms"] = wall / 1e6
            text = render(values)
            self.sent[seq] = mono
            try:
                session.send_nowait(text)
            except WsClosed as error:
                self.sent[seq] = 0
                self.publisher_error = f"the server closed the publisher: {error}"
                break
            self.published += 1
        self.publish_seconds = loop.time() - start

    async def _fold(self) -> None:
        while True:
            await asyncio.sleep(FOLD_EVERY)
            self.measures.registry.fold_some()

    # -- the run
    async def run(self) -> dict[str, Any]:
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.deadline = self.started + self.timeout
        self.gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
        self.all_ready = asyncio.Event()
        self.all_delivered = asyncio.Event()
        self.add_latency = self.measures.add
        self.publish_seconds = 0.0
        self.waiting = self.subscribers + self.stalled
        tasks = [
            asyncio.ensure_future(self._subscriber(i)) for i in range(self.subscribers)
        ]
        tasks += [asyncio.ensure_future(self._stalled(i)) for i in range(self.stalled)]
        folding = asyncio.ensure_future(self._fold())
        publisher = None
        subscribed = 0
        try:
            if self.active:
                publisher = await self._open(self.publish_url)
            await self.all_ready.wait()
            subscribed = sum(self.subscribed)
            if not subscribed or (self.active and publisher is None):
                raise ActivityFailed(self._cannot_measure(publisher))
            if self.active:
                publisher.listen(self._publisher_reply)
                if self.ack is None:
                    await asyncio.sleep(max(0.0, min(self.settle, self._left())))
                await self._publish(publisher)
                self.expected = self.published * subscribed
                if self.delivered >= self.expected:
                    self.all_delivered.set()
                wait = max(0.0, min(self.drain, self._left()))
                try:
                    await asyncio.wait_for(self.all_delivered.wait(), wait)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(max(0.0, min(self.duration, self._left())))
        finally:
            self.closing = True
            abort_all(self.stalled_connections)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_sessions(self.sessions)
            folding.cancel()
            await asyncio.gather(folding, return_exceptions=True)
        return self._result(subscribed)

    def _left(self) -> float:
        return self.deadline - self.loop.time()

    def _cannot_measure(self, publisher: WsSession | None) -> str:
        first = _first_failure(self.failures, self.failure_text)
        url = redact_url(self.url)
        if self.active and publisher is None:
            return (
                f"cannot open the publisher's WebSocket to "
                f"{redact_url(self.publish_url)}: {first}"
            )
        if first is not None:
            return f"no subscriber could connect to {url}: {first}"
        return (
            f"no subscriber was subscribed at {url}: no acknowledgement matching "
            f"'subscribe_ack' within {self.connect_timeout:g} s"
        )

    def _result(self, subscribed: int) -> dict[str, Any]:
        measures = self.measures
        elapsed = self.loop.time() - self.started
        reached = sum(1 for count in self.counts if count)
        measures.add_rate("success_rate", reached, self.subscribers)
        expected = self.messages * subscribed
        if self.active:
            measures.add_rate("delivery_rate", self.delivered, expected)
        measures.registry.fold()
        connected = sum(self.connected)
        result: dict[str, Any] = {
            "url": redact_url(self.url),
            "mode": "publish" if self.active else "listen",
            "subscribers_count": self.subscribers,
            "connected_count": connected,
            "subscribed_count": subscribed,
            "connect_failures_count": sum(self.failures.values()),
            "subscribe_failures_count": self.subscribe_failures,
            "connect_errors": dict(self.failures),
            "first_error": _first_failure(self.failures, self.failure_text),
            **measures.trend("connect_ms", "connect"),
            "received_count": self.received,
            "delivered_count": self.delivered,
            "subscribers_reached_count": reached,
            "success_rate": round(reached / self.subscribers, 6),
            "dropped_count": self.dropped,
            **measures.trend("message_latency_ms", "latency"),
            "elapsed_seconds": round(elapsed, 3),
        }
        if self.active:
            result.update(
                publish_url=redact_url(self.publish_url),
                messages_count=self.messages,
                published_count=self.published,
                publish_seconds=round(self.publish_seconds, 3),
                expected_count=expected,
                delivered_ratio=round(self.delivered / expected, 6)
                if expected
                else None,
                duplicates_count=self.duplicates,
                other_messages_count=self.others,
                stalled_count=self.stalled,
                stalled_subscribed_count=self.stalled_ready,
                publisher_error=self.publisher_error,
            )
            if not self.delivered and self.publisher_reply is not None:
                result["publisher_last_reply"] = self.publisher_reply
        else:
            result.update(
                latency_field=self.latency_field,
                listen_seconds=self.duration,
                unmeasured_count=self.others,
            )
        result.update(measures.judge(self.threshold_set, elapsed))
        return result


def message_latency(
    url: str,
    subscribers: int = 10,
    messages: int = None,
    interval: float = 0.01,
    message_template: dict = None,
    subscribe_message: dict = None,
    subscribe_ack: dict = None,
    publish_url: str = None,
    stalled_subscribers: int = 0,
    padding: int = 0,
    latency_field: str = None,
    duration: float = None,
    settle: float = 0.2,
    drain: float = 5.0,
    connect_timeout: float = 10.0,
    timeout: float = 60.0,
    headers: dict = None,
    thresholds: dict = None,
    profile: str = None,
    profiles: dict = None,
    name: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """End-to-end message latency and delivery through a WebSocket fan-out.

    Opens `subscribers` WebSockets to `url` (ws:// or wss://); each sends
    `subscribe_message` (a JSON value or a text; `{{client}}` is its index) and,
    with `subscribe_ack` (an object a JSON reply must contain, or a text it must
    contain), waits for the acknowledgement (without one it waits `settle`).
    Then one publisher, on `publish_url` (default `url`), sends `messages`
    messages (default 100), or messages for `duration`, one every `interval`
    (seconds or "5ms"), built from `message_template`: a JSON value or
    text with placeholders `{{tag}}` (required: it marks the message for its
    receivers), `{{seq}}`, `{{sent_ms}}` (epoch ms, a number), `{{sent_ns}}`
    and `{{padding}}` (`padding` bytes of "x"); default
    `{"tag": "{{tag}}", "sent_ms": "{{sent_ms}}"}`. Every text a subscriber
    receives is searched for the tags (other traffic on the channel is not
    counted); the latency of a delivery is its receive time minus its send
    time on one monotonic clock. After the last message the probe waits up to
    `drain` for the deliveries still missing.

    `stalled_subscribers` more subscribers subscribe and then stop reading, with
    a tiny TCP window, so that a fan-out which waits on its slowest client
    stalls for everybody after about 256 KB of messages.

    Listen mode: with `messages` 0 the probe publishes nothing; its subscribers
    listen for `duration` and measure the traffic already on the channel (a
    load's, say) as the load engine does: the receive time (epoch ms) minus the
    number found at `latency_field` ("sent_at", "meta.sent_at") of each JSON
    message.

    `profiles` maps names to argument overrides and `profile` picks one (e.g.
    an event size). `thresholds` are k6-style on the metrics
    message_latency_ms, connect_ms (trends), success_rate (share of the
    subscribers that got a message), delivery_rate (share of messages x
    subscribed subscribers that arrived), connection_success (rates) and
    failed_connections (a counter). The whole probe takes at most `timeout`,
    plus up to 2 s to close. Raises ActivityFailed on bad arguments and when it
    cannot measure at all: no subscriber (or no publisher) could connect
    (refused, not a WebSocket endpoint, ...). Returns counts, ratios, latency
    p50/p95/p99/max, connect times and, with thresholds, `thresholds_passed`;
    `name` records the result for `scenarios_passed`.
    """
    arguments = _apply_profile(
        {
            "url": url,
            "subscribers": subscribers,
            "messages": messages,
            "interval": interval,
            "message_template": message_template,
            "subscribe_message": subscribe_message,
            "subscribe_ack": subscribe_ack,
            "publish_url": publish_url,
            "stalled_subscribers": stalled_subscribers,
            "padding": padding,
            "latency_field": latency_field,
            "duration": duration,
            "settle": settle,
            "drain": drain,
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "headers": headers,
            "thresholds": thresholds,
            "name": name,
        },
        profile,
        profiles,
    )
    run = _latency_run(arguments, configuration, secrets)
    result = _run(run.run())
    if profile is not None:
        result["profile"] = profile
    logger.info(
        "ws message_latency %s: %d/%d subscribed, delivered %s, p95 %s ms%s",
        result["url"],
        result["subscribed_count"],
        result["subscribers_count"],
        result.get("delivered_ratio", result["delivered_count"]),
        result["latency_p95_ms"],
        ""
        if "thresholds_passed" not in result
        else f", thresholds {'passed' if result['thresholds_passed'] else 'FAILED'}",
    )
    _record(arguments["name"], result)
    return result


def _latency_run(
    arguments: dict[str, Any], configuration: Configuration, secrets: Secrets
) -> _LatencyRun:
    """A checked run of `message_latency`; `await run.run()` on any loop."""
    run = _LatencyRun(**_latency_settings(arguments, configuration, secrets))
    unavailable = {}
    if not run.active:
        unavailable["delivery_rate"] = "needs published messages (messages > 0)"
    run.threshold_set = run.measures.thresholds(arguments["thresholds"], unavailable)
    if arguments["name"] is not None:
        require_text("name", arguments["name"])
    return run


def _latency_settings(
    arguments: dict[str, Any], configuration: Configuration, secrets: Secrets
) -> dict[str, Any]:
    url = _ws_url("url", arguments["url"])
    publish_url = arguments["publish_url"]
    publish_url = url if publish_url is None else _ws_url("publish_url", publish_url)
    subscribers = require_int(
        "subscribers", arguments["subscribers"], 1, MAX_SUBSCRIBERS
    )
    interval = require_duration("interval", arguments["interval"], maximum=3600)
    field = arguments["latency_field"]
    duration = arguments["duration"]
    if duration is not None:
        duration = require_duration(
            "duration", duration, allow_equal=False, maximum=MAX_SECONDS
        )
    messages = arguments["messages"]
    if messages is None:
        if duration is None:
            messages = DEFAULT_MESSAGES
        elif interval <= 0:
            raise ActivityFailed(
                "argument 'interval' must be > 0 to publish for a 'duration'"
            )
        else:
            messages = max(1, math.floor(duration / interval + 1e-9))
    messages = require_int("messages", messages, 0, MAX_MESSAGES)
    if subscribers * messages > MAX_DELIVERIES:
        raise ActivityFailed(
            f"arguments 'subscribers' x 'messages' must be at most {MAX_DELIVERIES:,}"
            f" deliveries, got {subscribers} x {messages}"
        )
    stalled = require_int(
        "stalled_subscribers", arguments["stalled_subscribers"], 0, MAX_SUBSCRIBERS
    )
    padding = require_int("padding", arguments["padding"], 0, MAX_PADDING)
    timeout = require_duration(
        "timeout", arguments["timeout"], allow_equal=False, maximum=MAX_SECONDS
    )
    template = None
    if messages:
        if field is not None:
            raise ActivityFailed(
                "argument 'latency_field' is for listen mode (messages 0); with "
                "messages the probe times its own messages"
            )
        if arguments["messages"] is not None and duration is not None:
            raise ActivityFailed(
                "give one of the arguments 'messages' and 'duration' (publishing "
                "for a duration sends one message every 'interval')"
            )
        raw = _fill(
            _json_argument("message_template", arguments["message_template"]),
            configuration,
            secrets,
        )
        if raw is None:
            raw = {"tag": "{{tag}}", "sent_ms": "{{sent_ms}}"}
        template = compile_template(
            "message_template", raw, MESSAGE_FIELDS, required=("tag",)
        )
    else:
        if field is None or duration is None:
            raise ActivityFailed(
                "with messages 0 (listen mode) give 'latency_field' (where each "
                "message carries its send time, epoch ms) and 'duration'"
            )
        field = require_text("latency_field", field)
        if stalled:
            raise ActivityFailed(
                "argument 'stalled_subscribers' needs published messages (messages > 0)"
            )
    ack = _fill(
        _json_argument("subscribe_ack", arguments["subscribe_ack"]),
        configuration,
        secrets,
    )
    subscribe_raw = _fill(
        _json_argument("subscribe_message", arguments["subscribe_message"]),
        configuration,
        secrets,
    )
    if subscribe_raw is None and ack is not None:
        raise ActivityFailed("argument 'subscribe_ack' needs a 'subscribe_message'")
    return {
        "url": url,
        "publish_url": publish_url,
        "subscribers": subscribers,
        "stalled": stalled,
        "messages": messages,
        "interval": interval,
        "template": template,
        "padding": padding,
        "subscribe_message": _subscribe_template(subscribe_raw),
        "ack": _ack(ack),
        "latency_field": field,
        "read_field": json_field(field) if field else None,
        "duration": duration,
        "settle": require_duration("settle", arguments["settle"], maximum=3600),
        "drain": require_duration("drain", arguments["drain"], maximum=MAX_SECONDS),
        "connect_timeout": require_duration(
            "connect_timeout",
            arguments["connect_timeout"],
            allow_equal=False,
            maximum=3600,
        ),
        "timeout": timeout,
        "headers": _headers(arguments["headers"]),
    }


# -- connection_flap -----------------------------------------------------------------


class _FlapRun:
    """One run of `connection_flap` on the running loop."""

    def __init__(self, **settings: Any) -> None:
        self.__dict__.update(settings)
        self.measures = Measures(FLAP_METRICS)
        self.run_id = uuid.uuid4().hex[:10]
        self.tag_pattern = re.compile(re.escape(f"ws-{self.run_id}-") + r"(\d+)")
        self.sent: dict[int, int] = {}
        self.failures: Counter = Counter()
        self.failure_text: dict[str, str] = {}
        self.attempts = 0
        self.opened = 0
        self.cycles_done = 0
        self.cycles_ok = 0
        self.subscribe_failures = 0
        self.dropped = 0
        self.clients_reached = 0
        self.received = 0
        self.published = 0
        self.publisher_error: str | None = None

    def _left(self) -> float:
        return self.deadline - self.loop.time()

    async def _cycle(self, index: int, cycle: int, last_end: int | None) -> tuple:
        """One connect / subscribe / hold / close; (ok, got a message, end_ns)."""
        add = self.measures.add
        self.attempts += 1
        async with self.gate:
            try:
                connection, ms = await open_connection(
                    self.url, self.headers, min(self.connect_timeout, self._left())
                )
            except ConnectFailed as error:
                self.failures[error.kind] += 1
                self.failure_text.setdefault(error.kind, str(error))
                add("failed_connections", 1)
                add("connection_success", 0)
                return False, False, None
        self.opened += 1
        add("connection_success", 1)
        add("connect_ms", ms)
        got = dropped = False
        try:
            text = None
            if self.subscribe_message is not None:
                text = self.subscribe_message.render({"client": index})
            try:
                await subscribe(
                    connection,
                    text,
                    self.ack,
                    min(self.connect_timeout, self._left()),
                )
            except (TimeoutError, ConnectionClosed):
                self.subscribe_failures += 1
                return False, False, None
            subscribed = time.perf_counter_ns()
            if last_end is not None:
                add("reconnect_ms", (subscribed - last_end) / 1e6)
            hold_end = self.loop.time() + min(self.hold, max(0.0, self._left()))
            try:
                async with asyncio.timeout_at(hold_end):
                    async for message in connection:
                        self.received += 1
                        if self._tagged(message, connection.stamp[0]):
                            got = True
                dropped = True  # the server closed the connection during the hold
            except TimeoutError:
                pass
            except ConnectionClosed:
                dropped = True
            self.dropped += dropped
        finally:
            await close_all([connection], CLOSE_SECONDS / 2)
        ok = not dropped and (got or self.template is None)
        return ok, got, time.perf_counter_ns()

    def _tagged(self, message: Any, now: int) -> bool:
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        found = False
        for match in self.tag_pattern.finditer(message):
            sent = self.sent.get(int(match.group(1)))
            if sent is not None:
                found = True
                self.measures.add("message_latency_ms", (now - sent) / 1e6)
        return found

    async def _client(self, index: int) -> None:
        last_end = None
        reached = False
        for cycle in range(self.cycles):
            if self._left() <= 0 or self.loop.time() >= self.stop_at:
                break
            ok, got, last_end = await self._cycle(index, cycle, last_end)
            reached = reached or got
            self.cycles_done += 1
            self.cycles_ok += ok
            self.measures.add("cycle_success", 1 if ok else 0)
            if last_end is None:  # a failed attempt: pause before the next one
                await asyncio.sleep(max(0.0, min(self.hold, self._left())))
        self.clients_reached += reached

    async def _publish(
        self, connection: StampedConnection, stop: asyncio.Event
    ) -> None:
        start = self.loop.time()
        values = {"padding": ""}
        seq = 0
        while not stop.is_set() and seq < MAX_MESSAGES:
            due = start + seq * self.interval
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, due - self.loop.time()))
                break
            except TimeoutError:
                pass
            wall = time.time_ns()
            values.update(
                seq=seq,
                tag=f"ws-{self.run_id}-{seq}",
                sent_ns=wall,
                sent_ms=wall / 1e6,
            )
            text = self.template.render(values)
            self.sent[seq] = time.perf_counter_ns()
            try:
                await connection.send(text)
            except ConnectionClosed as error:
                self.publisher_error = f"the server closed the publisher: {error}"
                return
            self.published += 1
            seq += 1

    async def _drain(self, connection: StampedConnection) -> None:
        try:
            async for _ in connection:
                pass
        except ConnectionClosed:
            pass

    async def run(self) -> dict[str, Any]:
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.deadline = self.started + self.timeout
        self.stop_at = self.deadline
        if self.duration is not None:
            self.stop_at = min(self.deadline, self.started + self.duration)
        self.gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
        publisher = None
        helpers = []
        stop = asyncio.Event()
        try:
            if self.template is not None:
                try:
                    publisher, _ = await open_connection(
                        self.publish_url,
                        self.headers,
                        min(self.connect_timeout, self._left()),
                    )
                except ConnectFailed as error:
                    raise ActivityFailed(
                        "cannot open the publisher's WebSocket to "
                        f"{redact_url(self.publish_url)}: {error}"
                    ) from None
                helpers.append(asyncio.ensure_future(self._publish(publisher, stop)))
                helpers.append(asyncio.ensure_future(self._drain(publisher)))
            await asyncio.gather(*(self._client(i) for i in range(self.clients)))
        finally:
            stop.set()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if publisher is not None:
                await close_all([publisher], CLOSE_SECONDS)
        if not self.opened:
            first = _first_failure(self.failures, self.failure_text)
            raise ActivityFailed(
                f"no connection to {redact_url(self.url)} could be opened: "
                f"{first or 'the timeout ended first'}"
            )
        return self._result()

    def _result(self) -> dict[str, Any]:
        measures = self.measures
        elapsed = self.loop.time() - self.started
        if self.template is not None:
            measures.add_rate("success_rate", self.clients_reached, self.clients)
        measures.registry.fold()
        result: dict[str, Any] = {
            "url": redact_url(self.url),
            "clients_count": self.clients,
            "cycles_count": self.cycles_done,
            "planned_cycles_count": self.clients * self.cycles,
            "succeeded_count": self.cycles_ok,
            "success_ratio": round(self.cycles_ok / self.cycles_done, 6)
            if self.cycles_done
            else None,
            "attempts_count": self.attempts,
            "connect_failures_count": sum(self.failures.values()),
            "subscribe_failures_count": self.subscribe_failures,
            "dropped_count": self.dropped,
            "connect_errors": dict(self.failures),
            "first_error": _first_failure(self.failures, self.failure_text),
            **measures.trend("connect_ms", "connect"),
            **measures.trend("reconnect_ms", "reconnect"),
            "elapsed_seconds": round(elapsed, 3),
        }
        if self.template is not None:
            result.update(
                published_count=self.published,
                received_count=self.received,
                clients_reached_count=self.clients_reached,
                success_rate=round(self.clients_reached / self.clients, 6),
                publisher_error=self.publisher_error,
                **measures.trend("message_latency_ms", "latency"),
            )
        result.update(measures.judge(self.threshold_set, elapsed))
        return result


def connection_flap(
    url: str,
    clients: int = 5,
    cycles: int = 10,
    hold: float = 0.5,
    duration: float = None,
    subscribe_message: dict = None,
    subscribe_ack: dict = None,
    message_template: dict = None,
    interval: float = 0.1,
    publish_url: str = None,
    connect_timeout: float = 10.0,
    timeout: float = 60.0,
    headers: dict = None,
    thresholds: dict = None,
    name: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """A reconnection storm: `clients` clients each connect and disconnect `cycles` times.

    A cycle opens a WebSocket to `url`, sends `subscribe_message` (JSON or text,
    `{{client}}` is the client's index), waits for `subscribe_ack` if given (as
    in `message_latency`), keeps the connection `hold` (seconds or "500ms"),
    closes it, and the client reconnects at once. With `message_template` (as in
    `message_latency`, `{{tag}}` required) a publisher on `publish_url` (default
    `url`) sends a message every `interval` meanwhile, and a cycle counts as a
    success only if its client got one of them while connected (make `hold`
    several intervals long). A failed connection attempt is followed by a
    pause of `hold`. With `duration`, no cycle starts after that long (then
    `cycles` is only a cap). Everything ends within `timeout` (cycles not
    started by then are not run).

    Returns cycles, successes and `success_ratio`, connection attempts and
    failures by kind, connect time and time to reconnect (from a disconnect to
    being subscribed again) p50/p95/p99/max, and with a publisher
    `success_rate` (share of clients that got a message) and message latency.
    `thresholds` (k6-style) on message_latency_ms, connect_ms, reconnect_ms,
    success_rate, connection_success, cycle_success, failed_connections.
    Raises ActivityFailed on bad arguments, when the publisher cannot connect,
    and when not one connection could be opened. `name` records the result.
    """
    url = _ws_url("url", url)
    publish = url if publish_url is None else _ws_url("publish_url", publish_url)
    template = _fill(
        _json_argument("message_template", message_template), configuration, secrets
    )
    if template is not None:
        template = compile_template(
            "message_template", template, MESSAGE_FIELDS, required=("tag",)
        )
    ack = _fill(_json_argument("subscribe_ack", subscribe_ack), configuration, secrets)
    subscribe_raw = _fill(
        _json_argument("subscribe_message", subscribe_message), configuration, secrets
    )
    if subscribe_raw is None and ack is not None:
        raise ActivityFailed("argument 'subscribe_ack' needs a 'subscribe_message'")
    run = _FlapRun(
        url=url,
        publish_url=publish,
        clients=require_int("clients", clients, 1, MAX_CLIENTS),
        cycles=require_int("cycles", cycles, 1, MAX_CYCLES),
        hold=require_duration("hold", hold, maximum=3600),
        duration=None
        if duration is None
        else require_duration(
            "duration", duration, allow_equal=False, maximum=MAX_SECONDS
        ),
        subscribe_message=_subscribe_template(subscribe_raw),
        ack=_ack(ack),
        template=template,
        interval=require_duration(
            "interval", interval, allow_equal=False, maximum=3600
        ),
        connect_timeout=require_duration(
            "connect_timeout", connect_timeout, allow_equal=False, maximum=3600
        ),
        timeout=require_duration(
            "timeout", timeout, allow_equal=False, maximum=MAX_SECONDS
        ),
        headers=_headers(headers),
    )
    unavailable = {}
    if template is None:
        reason = "needs a publisher: give 'message_template'"
        unavailable = {"success_rate": reason, "message_latency_ms": reason}
    run.threshold_set = run.measures.thresholds(thresholds, unavailable)
    result = _run(run.run())
    logger.info(
        "ws connection_flap %s: %d/%d cycles succeeded, reconnect p95 %s ms",
        result["url"],
        result["succeeded_count"],
        result["cycles_count"],
        result["reconnect_p95_ms"],
    )
    _record(name, result)
    return result


# -- recorded results ----------------------------------------------------------------


def scenarios_passed(
    names: list,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Whether the WebSocket probe runs recorded under `names` met their thresholds.

    For a steady-state hypothesis after a method whose probes ran with `name`
    and `thresholds`. Before any of them has run (the hypothesis before the
    method) nothing is judged and `passed` is true; once one has run, every
    name must have a result whose thresholds passed. Returns `passed`, `ran`,
    `missing`, `failed` and per name its `thresholds`.
    """
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n.strip() for n in names)
    ):
        raise ActivityFailed(
            f"argument 'names' must be a non-empty list of names, got {names!r}"
        )
    ran, missing, failed, verdicts = [], [], [], {}
    for name in names:
        record = _records.get(RECORD_KIND, name)
        if record is None:
            missing.append(name)
            continue
        ran.append(name)
        verdicts[name] = record.get("thresholds", {})
        if record.get("thresholds_passed") is not True:
            failed.append(name)
    passed = not failed and (not missing or not ran)
    return {
        "passed": passed,
        "ran": ran,
        "missing": missing,
        "failed": failed,
        "thresholds": verdicts,
    }
