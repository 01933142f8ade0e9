"""Kubernetes label selectors, evaluated locally against cached objects.

Supports the string syntax the API server accepts: `k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k` (does not exist),
joined by commas (all must hold).
"""

import re
from collections.abc import Callable, Mapping

Matcher = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def parse_selector(selector: str) -> Matcher:
    """A function telling whether a label map matches `selector`; ValueError if malformed."""
    requirements = [_requirement(part) for part in _split(selector) if part.strip()]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def _split(selector: str) -> list[str]:
    # Commas separate requirements, except inside the parentheses of in/notin.
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _requirement(text: str) -> Matcher:
    if match := _SET.match(text):
        key, operator, raw = match.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ.match(text):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(text):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise ValueError(f"invalid label selector requirement: {text.strip()!r}")
