"""The Docker engine for tests: reach it, or skip (fail with CHAOSPIKA_REQUIRE_DOCKER=1).

Containers made by tests carry the label ``io.chaospika.test=<token>`` and a
unique name; `Containers.remove_all` (run by the fixtures' finalizers) removes
every container of its token. Images are built with `docker import`
(chaospika.docker._images); an image a test session built is removed at its end.
"""

import os
import shutil
import uuid
from typing import Any

import pytest

TEST_LABEL = "io.chaospika.test"
SLEEPER_REPOSITORY = "chaospika/test-sleeper"
REQUIRE_VARIABLE = "CHAOSPIKA_REQUIRE_DOCKER"


def engine_or_skip() -> Any:
    """A low-level client of the local engine; skip (or fail when required) without one."""
    try:
        from chaospika.docker import _engine

        return _engine.connect(None)
    except Exception as error:  # noqa: BLE001 - any reason means "no engine"
        message = (
            f"no Docker engine reachable ({error}); start one with "
            "`bash .ci/docker.sh` (see README)"
        )
        if os.environ.get(REQUIRE_VARIABLE):
            pytest.fail(f"{REQUIRE_VARIABLE} is set but {message}")
        pytest.skip(message)


def image_exists(client: Any, reference: str) -> bool:
    import docker

    try:
        client.inspect_image(reference)
        return True
    except docker.errors.ImageNotFound:
        return False


def remove_image_if_built(client: Any, reference: str, existed: bool) -> None:
    """Remove `reference` unless it was there before the session (and no container uses it)."""
    import docker

    if existed:
        return
    try:
        client.remove_image(reference, force=False)
    except docker.errors.APIError:
        pass  # still used by a container of another test run, or gone already


def build_sleeper(client: Any) -> tuple[str, bool]:
    """The test image (sh, sleep, rm from this machine); (reference, existed before)."""
    from chaospika.docker import _images

    binaries = {name: shutil.which(name) for name in ("sh", "sleep", "rm")}
    reference = _images.image_reference(SLEEPER_REPOSITORY, binaries)
    existed = image_exists(client, reference)
    built = _images.build_image(client, SLEEPER_REPOSITORY, binaries)
    assert built == reference
    return reference, existed


class Containers:
    """Makes sleeper containers with one token (label and name prefix); removes them."""

    def __init__(self, client: Any, image: str) -> None:
        self.client = client
        self.image = image
        self.token = uuid.uuid4().hex[:10]
        self.prefix = f"pika-test-{self.token}"

    def make(
        self,
        suffix: str,
        labels: dict | None = None,
        health: bool = False,
        restart_policy: str = "no",
        start: bool = True,
        script: str | None = None,
        init: bool = True,
    ) -> dict:
        """Create (and start) the container ``<prefix>-<suffix>``; return {name, id}.

        It sleeps (PID 1 is tini: a stop is quick; without `init`, sleep is PID 1
        and ignores SIGTERM: a stop waits its whole timeout), or runs `script` (sh).
        """
        name = f"{self.prefix}-{suffix}"
        command = ["/usr/local/bin/sleep", "600"]
        if script is not None:
            command = ["/usr/local/bin/sh", "-c", script]
        check = None
        if health:
            # not healthy for ~0.6 s after each start; healthy after
            command = [
                "/usr/local/bin/sh",
                "-c",
                "rm -f /tmp/ready; sleep 0.6; : > /tmp/ready; exec sleep 600",
            ]
            check = {
                "test": ["CMD", "/usr/local/bin/sh", "-c", "test -e /tmp/ready"],
                "interval": 200_000_000,
                "timeout": 2_000_000_000,
                "retries": 1,
            }
        created = self.client.create_container(
            self.image,
            command=command,
            name=name,
            labels={TEST_LABEL: self.token, **(labels or {})},
            healthcheck=check,
            host_config=self.client.create_host_config(
                network_mode="none", init=init, restart_policy={"Name": restart_policy}
            ),
        )
        if start:
            self.client.start(created["Id"])
        return {"name": name, "id": created["Id"]}

    def status(self, name: str) -> str:
        return self.client.inspect_container(name)["State"]["Status"]

    def remove_all(self) -> list[str]:
        """Remove every container of this token; return their names."""
        found = self.client.containers(
            all=True, filters={"label": f"{TEST_LABEL}={self.token}"}
        )
        for summary in found:
            self.client.remove_container(summary["Id"], force=True)
        return [summary["Names"][0].lstrip("/") for summary in found]
