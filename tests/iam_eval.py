"""IAM's evaluation of identity policies, for the tests that check the product's policies statement by statement.

What AWS documents (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
and .../reference_policies_elements_condition_operators.html), for identity policies alone:
- a request is allowed when some statement allows it and none denies it (an explicit deny wins);
- a statement applies when its Action matches (case-insensitive; ``*`` any run, ``?`` one character), its
  Resource matches (case-sensitive, the same wildcards) and every condition holds;
- ``StringEquals`` / ``StringLike``: the key's value equals / matches one of the listed values; a key the
  request does not carry fails the condition; ``ForAllValues:`` holds when every value the request carries for
  a multivalued key (``aws:TagKeys``) is listed (and, as AWS warns, when it carries none);
- ``Null``: ``true`` holds when the request does not carry the key, ``false`` when it does.
moto's evaluator matches resources as regular expressions (a ``$`` in ``_$folder$`` is an anchor there) and
denies on a failed condition, so these tests use this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict[str, str | list[str]] = field(default_factory=dict)


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _condition_holds(operator: str, key: str, expected, context: dict) -> bool:
    qualifier, _, name = operator.rpartition(":")
    actual = context.get(key)
    expected = _listed(expected)
    if name == "Null":
        return (actual is None) == (expected[0].lower() == "true")
    match = {"StringEquals": lambda e, a: e == a, "StringLike": wildcard}[name]
    if qualifier == "ForAllValues":
        return all(any(match(e, a) for e in expected) for a in _listed(actual or []))
    if qualifier == "ForAnyValue":
        return any(match(e, a) for e in expected for a in _listed(actual or []))
    if actual is None or not isinstance(actual, str):
        return False
    return any(match(e, actual) for e in expected)


def statement_applies(statement: dict, request: Request) -> bool:
    if not any(wildcard(a, request.action, ignore_case=True) for a in _listed(statement["Action"])):
        return False
    if not any(wildcard(r, request.resource) for r in _listed(statement["Resource"])):
        return False
    return all(_condition_holds(operator, key, expected, request.context)
               for operator, keys in statement.get("Condition", {}).items() for key, expected in keys.items())


def allowed(policy: dict, request: Request) -> bool:
    applying = [s for s in policy["Statement"] if statement_applies(s, request)]
    return any(s["Effect"] == "Allow" for s in applying) and not any(s["Effect"] == "Deny" for s in applying)
