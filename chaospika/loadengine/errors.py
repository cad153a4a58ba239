"""The one error type of the load engine's input checks."""

__all__ = ["ScenarioError"]


class ScenarioError(ValueError):
    """A bad field in a load specification; `field` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
