"""``host:port`` addresses, and the allow-list (loopback only by default)."""

from chaospika.controls._faults import DEFAULT_ALLOW_HOSTS, host_allowed
from chaospika.network.errors import bad_request

__all__ = ["DEFAULT_ALLOW_HOSTS", "checked_address", "format_address", "split_address"]


def split_address(field: str, value: object) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` or ``"[::1]:8080"`` as (host, port); 400 if malformed."""
    if not isinstance(value, str) or ":" not in value:
        raise bad_request(f"{field} must be a 'host:port' string, got {value!r}")
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise bad_request(f"{field} has no valid port: {value!r}") from None
    if not 0 <= port <= 65535:
        raise bad_request(f"{field} port out of range: {value!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    """(host, port) as Toxiproxy writes it: ``127.0.0.1:8080``, ``[::1]:8080``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def checked_address(
    field: str, value: object, allow_hosts: tuple[str, ...], upstream: bool = False
) -> tuple[str, int]:
    """`value` split, refused (400) when its host is outside `allow_hosts`."""
    host, port = split_address(field, value)
    if upstream and port == 0:
        raise bad_request(f"{field} needs a port: {value!r}")
    if not host_allowed(host, allow_hosts):
        raise bad_request(
            f"{field} {value!r} is not allowed: this proxy only uses addresses in "
            f"{list(allow_hosts)} (loopback by default; start the server with "
            "--allow-host to widen it)"
        )
    return host, port
