"""The client's causal context: a vector clock `reality_id -> highest sequence seen`.

The `Bus` merges (maximum per reality) the `causal` map of every pulse it receives, the pulse's
own `(reality_id, sequence)`, and every `PubAck`'s `(reality_id, sequence)`, and attaches the
whole map to every publish. The server then sets the entry for the published pulse's own
reality, so a subscriber can tell what its producer had seen.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Tuple

__all__ = ["CausalContext"]


class CausalContext:
    """A mutable vector clock; only ever moves forward."""

    __slots__ = ("_clock",)

    def __init__(self, initial: Mapping[str, int] = ()):  # type: ignore[assignment]
        self._clock: Dict[str, int] = {}
        self.merge(dict(initial))

    def observe(self, reality_id: str, sequence: int) -> None:
        if reality_id and sequence > self._clock.get(reality_id, 0):
            self._clock[reality_id] = sequence

    def merge(self, other: Mapping[str, int]) -> None:
        clock = self._clock
        for reality_id, sequence in other.items():
            if reality_id and sequence > clock.get(reality_id, 0):
                clock[reality_id] = sequence

    def forget(self, reality_id: str) -> None:
        """Drops one reality's entry (e.g. after the reality was recreated and restarted at 1)."""
        self._clock.pop(reality_id, None)

    def clear(self) -> None:
        self._clock.clear()

    def snapshot(self) -> Dict[str, int]:
        return dict(self._clock)

    def items(self) -> Iterable[Tuple[str, int]]:
        return self._clock.items()

    def __getitem__(self, reality_id: str) -> int:
        return self._clock.get(reality_id, 0)

    def __len__(self) -> int:
        return len(self._clock)

    def __repr__(self) -> str:
        return f"CausalContext({self._clock!r})"
