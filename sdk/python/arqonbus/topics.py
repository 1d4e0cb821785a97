"""Topic patterns, matched as the server matches them (proto/README.md).

A topic is 2 to 8 dot-separated segments of `[a-z0-9_-]`. In a pattern `*` stands for exactly
one segment and a last `>` for one or more. The SDK matches patterns itself only to route what
the server delivers to a subscription beyond its pattern (reality parameters, `Bus.params`);
the server validates topics and patterns.
"""

from __future__ import annotations

__all__ = ["matches"]


def matches(pattern: str, topic: str) -> bool:
    """Whether `topic` matches subscription `pattern` (`*` one segment, a last `>` the rest).

    >>> matches("sys.param.>", "sys.param.lab.gain"), matches("rig.*", "rig.a.temp")
    (True, False)
    """
    want = pattern.split(".")
    have = topic.split(".")
    for i, segment in enumerate(want):
        if segment == ">" and i == len(want) - 1:
            return len(have) > i
        if i >= len(have) or (segment != "*" and segment != have[i]):
            return False
    return len(want) == len(have)
