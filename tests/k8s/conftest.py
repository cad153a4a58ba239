"""Fixtures: an in-test Kubernetes API server with its controllers, a kubeconfig for it."""

import secrets as token_source
from dataclasses import dataclass
from pathlib import Path

import pytest
from in_test_apiserver import (
    Cluster,
    InTestApiServer,
    Service,
    use_kubeconfig,
    write_kubeconfig,
)

from chaospika.k8s import _state

NAMESPACE = "shop"
CLIENT_VARIABLES = (
    "KUBERNETES_CONTEXT",
    "KUBERNETES_HOST",
    "KUBERNETES_API_KEY",
    "KUBERNETES_API_KEY_PREFIX",
    "KUBERNETES_USERNAME",
    "KUBERNETES_PASSWORD",
    "KUBERNETES_CERT_FILE",
    "KUBERNETES_VERIFY_SSL",
    "CHAOSTOOLKIT_IN_POD",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)


@dataclass
class K8s:
    """The cluster, its API server, the token it wants and a kubeconfig for it."""

    cluster: Cluster
    server: InTestApiServer
    token: str
    kubeconfig: Path
    namespace: str = NAMESPACE

    def service(self, selector: str) -> Service:
        service = Service(self.cluster, self.namespace, selector).start()
        self._services.append(service)
        return service

    def names(self, selector: str = "") -> list[str]:
        return sorted(
            p["metadata"]["name"] for p in self.cluster.pods(self.namespace, selector)
        )


@pytest.fixture(autouse=True)
def fresh_k8s_state():
    """Kills, recoveries and downtimes of one test are not seen by the next."""
    _state.reset()
    yield
    _state.reset()


@pytest.fixture
def k8s(tmp_path, monkeypatch):
    """An in-test API server (fast controllers: 0.3 s to create, 0.3 s to ready)."""
    for name in CLIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cluster = Cluster(create_delay=0.3, ready_delay=0.3)
    token = token_source.token_hex(16)
    server = InTestApiServer(cluster, token).start()
    cluster.start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url, token)
    use_kubeconfig(monkeypatch, kubeconfig)
    env = K8s(cluster, server, token, kubeconfig)
    env._services = []
    try:
        yield env
    finally:
        for service in env._services:
            service.stop()
        cluster.stop()
        server.stop()
