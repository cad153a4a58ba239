"""The API's errors, with Toxiproxy's messages and status codes."""

__all__ = ["ApiError", "bad_request", "conflict", "not_found"]


class ApiError(Exception):
    """An error the API answers as ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


def bad_request(message: str) -> ApiError:
    """400: a bad body, field, toxic type, stream or attribute."""
    return ApiError(400, message)


def not_found(what: str) -> ApiError:
    """404: "proxy not found" / "toxic not found"."""
    return ApiError(404, f"{what} not found")


def conflict(what: str) -> ApiError:
    """409: "proxy already exists" / "toxic already exists"."""
    return ApiError(409, f"{what} already exists")
