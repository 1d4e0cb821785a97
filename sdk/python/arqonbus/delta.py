"""Delta-only topics: the ArqonDelta 1 codec and the per-chain reconstruction (docs/delta.md).

On a topic the server declares delta-only, a subscriber receives a keyframe (the whole state)
and then deltas against the state before. The SDK rebuilds the whole state before a pulse
reaches the program, so `pulse.value` is always the whole state; `pulse.delta` tells how the
pulse travelled.

    from arqonbus import delta
    d = delta.encode(b"hello world", b"hello World")   # bytes.fromhex("0b 18 05 57 10")
    assert delta.apply(b"hello world", d) == b"hello World"

The format: all integers are unsigned LEB128 varints of at most 10 bytes.

    delta   := varint(len(T)) op*
    op      := varint(n << 2 | tag) operand
    tag 0   SKIP    copy n bytes of B from the current output position (no operand)
    tag 1   INSERT  n literal bytes follow
    tag 2   COPY    varint(offset): copy n bytes of B from offset
    tag 3   reserved (an error)

`apply` raises `DeltaError` on every error the contract lists: n = 0, a SKIP or COPY reading
past the end of B, an INSERT running past the end of the delta, output growing past len(T), a
malformed or overflowing varint, a final length other than len(T), and the reserved tag.

`encode` is the bus's encoder: common prefix and suffix; between them, when the two middles
have the same length, SKIP for unchanged runs and INSERT for changed ones (unchanged runs
shorter than `MIN_SKIP_RUN` bytes merged into the inserts around them), otherwise one INSERT of
the target's middle; then SKIP for the suffix when the lengths are equal, COPY from its offset
in B when they differ.

The CRC of a state is CRC-32/ISO-HDLC, `zlib.crc32`.
"""

from __future__ import annotations

import zlib
from typing import Dict, List, NamedTuple, Optional, Tuple

from arqonbus._proto.arqon.v1 import arqon_pb2 as _pb
from arqonbus.errors import DeltaError

__all__ = ["DeltaError", "MIN_SKIP_RUN", "PulseDelta", "apply", "checksum", "encode"]

TAG_SKIP = 0
TAG_INSERT = 1
TAG_COPY = 2
#: Unchanged runs between changed bytes shorter than this are sent as literals: a SKIP op
#: costs at least a byte, and the INSERTs on either side of it one each.
MIN_SKIP_RUN = 4
#: A varint of more than 10 bytes, or one above 2**64 - 1, is malformed (protobuf's rule).
_MAX_VARINT_BYTES = 10
_U64_MAX = (1 << 64) - 1


def checksum(state: bytes) -> int:
    """The CRC-32 of a whole state, as `DeltaInfo.checksum` carries it (`zlib.crc32`)."""
    return zlib.crc32(state) & 0xFFFFFFFF


class PulseDelta(NamedTuple):
    """How a pulse of a delta-only topic travelled (`Pulse.delta`; its `DeltaInfo`).

    `keyframe`: the payload was the whole state. Otherwise it was a delta against the state of
    `base_sequence`. `checksum` is the CRC-32 of the whole state, which the SDK has checked.
    """

    keyframe: bool
    base_sequence: int
    checksum: int


# --------------------------------------------------------------------------------------------
# Varints


def _read_varint(data: bytes, pos: int, what: str) -> Tuple[int, int]:
    """The varint at `data[pos:]` and the position after it."""
    value = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise DeltaError(f"malformed delta: the varint of {what} at byte {pos} is cut off by the end of the delta")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _U64_MAX:
                raise DeltaError(f"malformed delta: the varint of {what} at byte {pos} overflows 64 bits")
            return value, pos + i + 1
        shift += 7
    raise DeltaError(f"malformed delta: the varint of {what} at byte {pos} is longer than {_MAX_VARINT_BYTES} bytes")


def _write_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


# --------------------------------------------------------------------------------------------
# Applying


def apply(base: bytes, delta: bytes, max_len: Optional[int] = None) -> bytes:
    """The target state that `delta` (ArqonDelta 1) makes of `base`. Raises `DeltaError`
    naming the byte of the delta at fault when the delta is not valid for this base, and when
    it declares a target longer than `max_len` bytes (COPY ops can repeat the base, so a few
    bytes of delta can make a large state: bound what comes from the network)."""
    base = bytes(base)
    delta = bytes(delta)
    target_len, pos = _read_varint(delta, 0, "the target length")
    if max_len is not None and target_len > max_len:
        raise DeltaError(f"invalid delta: it declares a state of {target_len} bytes, over the limit of {max_len}")
    out = bytearray()
    end = len(delta)
    while pos < end:
        op_at = pos
        word, pos = _read_varint(delta, pos, "an op")
        n, tag = word >> 2, word & 3
        if n == 0:
            raise DeltaError(f"invalid delta: the op at byte {op_at} has length 0")
        if tag == 3:
            raise DeltaError(f"invalid delta: the op at byte {op_at} has the reserved tag 3")
        if len(out) + n > target_len:
            raise DeltaError(
                f"invalid delta: the op at byte {op_at} grows the output to {len(out) + n} bytes, "
                f"past the target length {target_len}"
            )
        if tag == TAG_SKIP:
            start = len(out)
            if start + n > len(base):
                raise DeltaError(
                    f"invalid delta: the SKIP of {n} at byte {op_at} reads base bytes {start}..{start + n}, "
                    f"past its end ({len(base)} bytes)"
                )
            out += base[start : start + n]
        elif tag == TAG_INSERT:
            if pos + n > end:
                raise DeltaError(
                    f"invalid delta: the INSERT of {n} at byte {op_at} runs past the end of the delta "
                    f"({end - pos} bytes left)"
                )
            out += delta[pos : pos + n]
            pos += n
        else:  # TAG_COPY
            offset, pos = _read_varint(delta, pos, "a COPY offset")
            if offset + n > len(base):
                raise DeltaError(
                    f"invalid delta: the COPY of {n} from offset {offset} at byte {op_at} reads past the end "
                    f"of the base ({len(base)} bytes)"
                )
            out += base[offset : offset + n]
    if len(out) != target_len:
        raise DeltaError(f"invalid delta: it makes {len(out)} bytes, its header says {target_len}")
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Encoding


def _op(out: bytearray, tag: int, n: int) -> None:
    _write_varint(out, n << 2 | tag)


def _same_length_ops(base: bytes, target: bytes, start: int, stop: int) -> List[Tuple[int, int, int]]:
    """(tag, start, stop) ops for target[start:stop] against the same range of base: SKIP for
    unchanged runs of at least MIN_SKIP_RUN bytes, INSERT for the rest."""
    ops: List[Tuple[int, int, int]] = []
    i = start
    while i < stop:
        j = i
        if base[i] == target[i]:
            while j < stop and base[j] == target[j]:
                j += 1
            tag = TAG_SKIP if j - i >= MIN_SKIP_RUN else TAG_INSERT
        else:
            while j < stop and base[j] != target[j]:
                j += 1
            tag = TAG_INSERT
        if ops and ops[-1][0] == tag == TAG_INSERT:
            ops[-1] = (TAG_INSERT, ops[-1][1], j)  # a short unchanged run joins its inserts
        else:
            ops.append((tag, i, j))
        i = j
    return ops


def encode(base: bytes, target: bytes) -> bytes:
    """A delta (ArqonDelta 1) that turns `base` into `target`, made as the bus makes it (see
    the module documentation); `apply(base, encode(base, target)) == target` always."""
    base = bytes(base)
    target = bytes(target)
    shorter = min(len(base), len(target))
    prefix = 0
    while prefix < shorter and base[prefix] == target[prefix]:
        prefix += 1
    suffix = 0
    while suffix < shorter - prefix and base[-1 - suffix] == target[-1 - suffix]:
        suffix += 1
    out = bytearray()
    _write_varint(out, len(target))
    if prefix:
        _op(out, TAG_SKIP, prefix)
    middle_stop = len(target) - suffix
    if len(base) == len(target):
        for tag, start, stop in _same_length_ops(base, target, prefix, middle_stop):
            _op(out, tag, stop - start)
            if tag == TAG_INSERT:
                out += target[start:stop]
    elif middle_stop > prefix:
        _op(out, TAG_INSERT, middle_stop - prefix)
        out += target[prefix:middle_stop]
    if suffix:
        if len(base) == len(target):
            _op(out, TAG_SKIP, suffix)  # the output position is the suffix's offset in the base
        else:
            _op(out, TAG_COPY, suffix)
            _write_varint(out, len(base) - suffix)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Reconstruction


class Chains:
    """The receiver's side of the chain rules: per topic, the last state and its sequence, for
    one subscription or one history read. `rebuild` turns a pulse of a delta-only topic into
    the whole state in place, or raises `DeltaError`.

    A chain holds one state per delta-only topic the subscription sees; the server bounds how
    many topics it delta-encodes and how large their states are (`limits.max_delta_topics_per_shard`,
    `limits.max_delta_state_bytes`), and anything past those bounds arrives as keyframes.
    """

    __slots__ = ("_states", "_what", "max_state_bytes")

    def __init__(self, what: str = "this subscription", max_state_bytes: Optional[int] = None):
        self._states: Dict[str, Tuple[int, bytes]] = {}
        self._what = what
        #: The largest state a delta may declare: a state must fit in one keyframe, so the
        #: client passes its `max_incoming_frame_bytes`.
        self.max_state_bytes = max_state_bytes

    def clear(self) -> None:
        """Forgets every state (a new server-side subscription starts new chains)."""
        self._states.clear()

    def state(self, topic: str) -> Optional[Tuple[int, bytes]]:
        """(sequence, state) held for `topic`, or None."""
        return self._states.get(topic)

    def rebuild(self, message: "_pb.ArqonMessage") -> None:
        """If `message` carries `delta`, replaces its payload's value by the whole state it
        stands for (checked against `delta.checksum`) and keeps that state for the next delta
        of its topic. A message without `delta` is left alone. On an error the topic's chain
        is dropped, so its later deltas fail too until the next keyframe."""
        info = message.delta
        topic = message.topic
        sequence = message.sequence
        if info.keyframe:
            state = message.payload.value
        else:
            held = self._states.get(topic)
            if held is None or held[0] != info.base_sequence:
                self._states.pop(topic, None)
                has = "no state of that topic" if held is None else f"the state of sequence {held[0]}"
                raise DeltaError(
                    f"delta for {topic!r} in {message.reality_id!r} at sequence {sequence} applies to "
                    f"sequence {info.base_sequence}, but {self._what} holds {has}",
                    topic=topic,
                    sequence=sequence,
                )
            try:
                state = apply(held[1], message.payload.value, self.max_state_bytes)
            except DeltaError as exc:
                self._states.pop(topic, None)
                raise DeltaError(
                    f"delta for {topic!r} in {message.reality_id!r} at sequence {sequence}: {exc}",
                    topic=topic,
                    sequence=sequence,
                ) from None
        crc = checksum(state)
        if crc != info.checksum:
            self._states.pop(topic, None)
            form = "keyframe" if info.keyframe else f"delta against sequence {info.base_sequence}"
            raise DeltaError(
                f"state of {topic!r} in {message.reality_id!r} at sequence {sequence} ({form}) has "
                f"CRC-32 {crc:#010x}, the pulse says {info.checksum:#010x}",
                topic=topic,
                sequence=sequence,
            )
        self._states[topic] = (sequence, state)
        if not info.keyframe:
            message.payload.value = state
