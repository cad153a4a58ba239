"""Kubernetes label selectors: parsed and matched as the API server does.

The grammar and meaning are those of ``k8s.io/apimachinery/pkg/labels``:
requirements joined by commas, each one of ``key``, ``!key``, ``key=value``,
``key==value``, ``key!=value``, ``key in (a,b)``, ``key notin (a,b)``,
``key>1``, ``key<1``. ``!=`` and ``notin`` also match objects without the key;
the empty selector matches everything. Keys and values are checked like the
server checks them (qualified names, values of at most 63 characters).
"""

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Requirement",
    "SelectorError",
    "from_label_selector",
    "matches",
    "parse",
]

SPECIAL = "!=(),<>"
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_INTEGER = re.compile(r"^-?[0-9]+$")
# Operators as the API server spells them in a LabelSelector's matchExpressions.
EXPRESSION_OPERATORS = {
    "In": "in",
    "NotIn": "notin",
    "Exists": "exists",
    "DoesNotExist": "!",
}


class SelectorError(ValueError):
    """A label selector that does not parse; the message says where and why."""


@dataclass(frozen=True)
class Requirement:
    """One requirement: `op` is =, !=, in, notin, exists, !, gt or lt."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    @property
    def positive(self) -> bool:
        """True if it names what to select (=, in), not only what to leave out."""
        return self.op in ("=", "in")

    def matches(self, labels: dict[str, str]) -> bool:
        """True if `labels` satisfy this requirement."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present or not _INTEGER.match(str(value)):
            return False
        if self.op == "gt":
            return int(value) > int(self.values[0])
        return int(value) < int(self.values[0])

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        symbol = {"gt": ">", "lt": "<"}.get(self.op, self.op)
        return f"{self.key}{symbol}{self.values[0]}"


def _check_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (
        not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)
    ):
        raise SelectorError(f"invalid label key {key!r}: bad prefix")
    if not name or len(name) > 63 or not _NAME.match(name):
        raise SelectorError(
            f"invalid label key {key!r}: a name of at most 63 characters, "
            "alphanumeric at both ends, with '-', '_' or '.' between"
        )
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(
            f"invalid label value {value!r}: at most 63 characters, alphanumeric "
            "at both ends, with '-', '_' or '.' between (or empty)"
        )
    return value


def _tokens(text: str) -> list[str]:
    """Split `text` into identifiers and the operators ! = == != ( ) , < >."""
    tokens, index = [], 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
        elif text.startswith(("==", "!="), index):
            tokens.append(text[index : index + 2])
            index += 2
        elif char in SPECIAL:
            tokens.append(char)
            index += 1
        else:
            end = index
            while (
                end < len(text) and not text[end].isspace() and text[end] not in SPECIAL
            ):
                end += 1
            tokens.append(text[index:end])
            index = end
    return tokens


def _identifier(token: str | None) -> bool:
    return token is not None and token not in ("==", "!=") and token[0] not in SPECIAL


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.at += 1
        return token

    def fail(self, why: str) -> SelectorError:
        return SelectorError(f"label selector {self.text!r}: {why}")

    def requirement(self) -> Requirement:
        token = self.take()
        if token == "!":
            key = self.take()
            if not _identifier(key):
                raise self.fail(f"'!' must be followed by a key, got {key!r}")
            return Requirement(_check_key(key), "!")
        if not _identifier(token) or token in ("in", "notin"):
            raise self.fail(f"expected a key, got {token!r}")
        key = _check_key(token)
        following = self.peek()
        if following in (None, ","):
            return Requirement(key, "exists")
        operator = self.take()
        if operator in ("=", "==", "!="):
            value = self.peek()
            if value in (None, ","):
                return Requirement(key, "!=" if operator == "!=" else "=", ("",))
            self.take()
            if not _identifier(value):
                raise self.fail(f"expected a value after {operator!r}, got {value!r}")
            return Requirement(
                key, "!=" if operator == "!=" else "=", (_check_value(value),)
            )
        if operator in ("in", "notin"):
            return Requirement(key, operator, self.value_set(operator))
        if operator in ("<", ">"):
            value = self.take()
            if not _identifier(value) or not _INTEGER.match(value):
                raise self.fail(f"{operator!r} needs an integer value, got {value!r}")
            return Requirement(key, "gt" if operator == ">" else "lt", (value,))
        raise self.fail(f"expected an operator after {key!r}, got {operator!r}")

    def value_set(self, operator: str) -> tuple[str, ...]:
        if self.take() != "(":
            raise self.fail(f"{operator!r} must be followed by '('")
        values: list[str] = []
        expect_value = True
        while True:
            token = self.take()
            if token is None:
                raise self.fail("unclosed '('")
            if token == ")":
                if expect_value and values:
                    values.append(
                        ""
                    )  # "a in (x,)": the empty value, as the server reads it
                break
            if token == ",":
                if expect_value:
                    values.append("")
                expect_value = True
                continue
            if not expect_value or not _identifier(token):
                raise self.fail(f"unexpected {token!r} in the value set")
            values.append(_check_value(token))
            expect_value = False
        if not values:
            raise self.fail(f"the value set of {operator!r} can't be empty")
        return tuple(dict.fromkeys(values))

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        if not self.tokens:
            return requirements
        while True:
            requirements.append(self.requirement())
            token = self.take()
            if token is None:
                return requirements
            if token != ",":
                raise self.fail(f"expected ',' between requirements, got {token!r}")
            if self.peek() is None:
                raise self.fail("a ',' must be followed by a requirement")


def parse(selector: str) -> list[Requirement]:
    """The requirements of `selector` (empty list: it selects everything)."""
    if not isinstance(selector, str):
        raise SelectorError(f"a label selector is a string, got {selector!r}")
    return _Parser(selector).parse()


def matches(requirements: list[Requirement], labels: dict[str, str] | None) -> bool:
    """True if `labels` satisfy every requirement."""
    labels = labels or {}
    return all(requirement.matches(labels) for requirement in requirements)


def from_label_selector(selector: dict[str, Any] | None) -> str:
    """A workload's ``spec.selector`` (matchLabels, matchExpressions) as a string."""
    selector = selector or {}
    parts = [
        f"{key}={value}"
        for key, value in sorted((selector.get("matchLabels") or {}).items())
    ]
    for expression in selector.get("matchExpressions") or []:
        op = EXPRESSION_OPERATORS.get(expression.get("operator"))
        key = expression.get("key")
        if op is None or not key:
            raise SelectorError(f"unsupported matchExpression {expression!r}")
        if op == "exists":
            parts.append(key)
        elif op == "!":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {op} ({','.join(expression.get('values') or [])})")
    text = ",".join(parts)
    parse(text)  # what the server would refuse, refused here
    return text
