"""The client is set up as chaostoolkit-kubernetes sets it up: kubeconfig and
context, or host and token from the secrets; the token reaches the server and
never an error message."""

import logging

import pytest
from chaoslib.exceptions import ActivityFailed
from in_test_apiserver import use_kubeconfig, write_kubeconfig

from chaospika.k8s import probes


@pytest.fixture
def web(k8s):
    k8s.cluster.add_deployment(k8s.namespace, "web", 2, {"app": "web"})
    return k8s


def test_the_kubeconfig_current_context_is_used(web):
    assert probes.pods_ready("app=web", web.namespace)["ready"] is True
    assert set(web.server.seen_authorization) == {f"Bearer {web.token}"}


def test_the_context_comes_from_the_secrets(web, tmp_path, monkeypatch):
    stale = write_kubeconfig(
        tmp_path / "stale", web.server.url, web.token, current="stale"
    )
    use_kubeconfig(monkeypatch, stale)

    with pytest.raises(ActivityFailed) as refused:
        probes.pods_ready("app=web", web.namespace)
    assert "401 Unauthorized" in str(refused.value)
    assert "not-the-token" not in str(refused.value)

    secrets = {"KUBERNETES_CONTEXT": "in-test"}
    assert probes.pods_ready("app=web", web.namespace, secrets=secrets)["ready"] is True
    assert web.server.seen_authorization[-1] == f"Bearer {web.token}"


def test_host_and_token_come_from_the_secrets_without_a_kubeconfig(
    web, tmp_path, monkeypatch, caplog
):
    use_kubeconfig(monkeypatch, tmp_path / "no-such-kubeconfig")
    secrets = {"KUBERNETES_HOST": web.server.url, "KUBERNETES_API_KEY": web.token}
    caplog.set_level(logging.DEBUG, logger="chaostoolkit")

    assert probes.pods_ready("app=web", web.namespace, secrets=secrets)["ready"] is True
    assert web.server.seen_authorization[-1] == f"Bearer {web.token}"

    wrong = {**secrets, "KUBERNETES_API_KEY": "wrong-token-value"}
    with pytest.raises(ActivityFailed) as refused:
        probes.pods_ready("app=web", web.namespace, secrets=wrong)
    assert "401" in str(refused.value) and "wrong-token-value" not in str(refused.value)
    assert web.token not in caplog.text and "wrong-token-value" not in caplog.text


def test_an_unreachable_server_is_an_activity_failure(web, tmp_path, monkeypatch):
    from chaospika._ports import free_port

    closed = write_kubeconfig(
        tmp_path / "closed", f"http://127.0.0.1:{free_port()}", web.token
    )
    use_kubeconfig(monkeypatch, closed)
    with pytest.raises(ActivityFailed) as failed:
        probes.pods_ready("app=web", web.namespace)
    assert "did not answer" in str(failed.value)
