"""The Kubernetes API client, set up as chaostoolkit-kubernetes sets it up.

`create_k8s_api_client(secrets)` of chaostoolkit-kubernetes decides where the
API server is and how to authenticate: the kubeconfig file (``KUBECONFIG``,
else ``~/.kube/config``) with ``KUBERNETES_CONTEXT`` from the secrets or the
environment; in a pod with ``CHAOSTOOLKIT_IN_POD=true``; else
``KUBERNETES_HOST`` with ``KUBERNETES_API_KEY`` (or a client certificate,
or a user name and password) from the secrets or the environment. Every call
here has a request timeout, and every API error becomes an `ActivityFailed`
that says what was asked and what the server answered (never a credential).
"""

import json
from collections.abc import Callable
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaospika._secrets import redact_text

__all__ = ["Api", "ApiFailed", "api"]

# (connect, read) seconds for one request; a watch adds its own window.
REQUEST_TIMEOUT = (5.0, 30.0)


class ApiFailed(ActivityFailed):
    """The API server answered with an error; `status` is its HTTP status."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class Api:
    """The two API groups the k8s activities use, on one configured client."""

    def __init__(self, client: Any) -> None:
        from kubernetes import client as k8s

        self.client = client
        self.core = k8s.CoreV1Api(client)
        self.apps = k8s.AppsV1Api(client)

    def plain(self, obj: Any) -> dict[str, Any]:
        """A client model as the API's JSON (camelCase keys, RFC 3339 times)."""
        return self.client.sanitize_for_serialization(obj)

    def call(
        self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """`method(*args, **kwargs)` with a timeout; failures as ActivityFailed."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            return method(*args, **kwargs)
        except ApiException as error:
            raise ApiFailed(f"{what}: {describe(error)}", error.status) from None
        except (HTTPError, OSError) as error:  # refused, reset, timed out, bad TLS
            raise ActivityFailed(
                f"{what}: the Kubernetes API server did not answer "
                f"({type(error).__name__}: {redact_text(str(error))[:300]})"
            ) from None


def describe(error: Any) -> str:
    """An ApiException as "404 NotFound: pods "x" not found"."""
    message, reason = "", getattr(error, "reason", "") or ""
    try:
        body = json.loads(error.body or "{}")
        message = body.get("message") or ""
        reason = body.get("reason") or reason
    except (TypeError, ValueError, AttributeError):
        message = str(getattr(error, "body", "") or "")[:300]
    return redact_text(f"{error.status} {reason}: {message}".strip().rstrip(":"))


def api(secrets: Secrets = None) -> Api:
    """A client configured by chaostoolkit-kubernetes from `secrets` and the environment."""
    try:
        import chaosk8s
    except ImportError:
        raise ActivityFailed(
            "chaospika.k8s needs chaostoolkit-kubernetes: "
            "pip install 'chaostoolkit-pika[k8s]'"
        ) from None
    try:
        client = chaosk8s.create_k8s_api_client(secrets)
    except Exception as error:  # noqa: BLE001 - a broken kubeconfig, no in-cluster token
        raise ActivityFailed(
            "Kubernetes client setup (chaostoolkit-kubernetes) failed: "
            f"{type(error).__name__}: {redact_text(str(error))[:300]}"
        ) from None
    return Api(client)
