"""Fixtures of the Docker tests: the real local engine, a test image, throwaway containers.

Without a reachable engine the tests that need one are skipped, unless
CHAOSPIKA_REQUIRE_DOCKER is set (CI sets it): then they fail.
"""

import pytest
from docker_engine import (
    Containers,
    build_sleeper,
    engine_or_skip,
    image_exists,
    remove_image_if_built,
)

from chaospika.sandbox import redis_container


@pytest.fixture(scope="session")
def docker_api():
    """A low-level client (docker.APIClient) of the local engine."""
    client = engine_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sleeper_image(docker_api):
    """The `docker import`ed test image (sh, sleep, rm); removed at the end if built here."""
    reference, existed = build_sleeper(docker_api)
    yield reference
    remove_image_if_built(docker_api, reference, existed)


@pytest.fixture(scope="session")
def sandbox_redis_image(docker_api):
    """The sandbox Redis image; removed at the end if this session built it."""
    reference = redis_container.redis_image_reference()
    existed = image_exists(docker_api, reference)
    assert redis_container.redis_image() == reference
    yield reference
    remove_image_if_built(docker_api, reference, existed)


@pytest.fixture
def containers(docker_api, sleeper_image):
    """`containers.make(suffix, labels=, health=, restart_policy=, start=)`; every
    container made is removed after the test."""
    made = Containers(docker_api, sleeper_image)
    yield made
    made.remove_all()
