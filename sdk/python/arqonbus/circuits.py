"""Typed circuits and strict manifests from Python (docs/sam.md).

A circuit is a named graph of operator stages in one reality; every edge (a topic one stage gives
and another takes) is type-checked by the bus when the circuit is applied and on every pulse
after. `Bus.apply_circuit(spec)` installs one (controllers only; audited), where `spec` is:

- an `arqon.circuit.v1.Circuit` message;
- a mapping as `circuit_message` takes it: ``{"name", "reality", "stages": [{"name",
  "operator", "input": {"topic", "type"}, "output": {"topic", "type"}}]}``, the shape of the
  TOML files `arqonbus circuit check|apply` read;
- a `pathlib.Path` to such a TOML file, or its text.

`Bus.remove_circuit(name)` removes one. A refusal raises `InvalidRequest` naming the edge (both
stages and both types) or the stage an online operator could not serve.

`descriptor_set(*message_classes)` builds the `OperatorManifest.descriptor_set` of strict mode:
the serialized `FileDescriptorSet` of the classes' files and everything they import.
"""

from __future__ import annotations

import pathlib
import tomllib
from typing import Any, Iterable, Mapping, Union

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from arqonbus._proto.arqon.circuit.v1 import circuit_pb2 as _circuit_pb

__all__ = [
    "APPLY_TOPIC",
    "REMOVE_TOPIC",
    "CircuitSpec",
    "circuit_message",
    "descriptor_set",
]

#: The controller topics that install and remove circuits.
APPLY_TOPIC = "sys.control.circuit.apply"
REMOVE_TOPIC = "sys.control.circuit.remove"

CircuitSpec = Union["_circuit_pb.Circuit", Mapping[str, Any], pathlib.Path, str]

_STAGE_KEYS = {"name", "operator", "input", "output"}
_PORT_KEYS = {"topic", "type"}


def _port(stage: str, side: str, port: Any) -> tuple:
    if port is None:
        return "", ""
    if not isinstance(port, Mapping) or set(port) != _PORT_KEYS:
        raise ValueError(f"stage `{stage}`: {side} must be {{topic, type}}, not {port!r}")
    return str(port["topic"]), str(port["type"])


def circuit_message(spec: CircuitSpec) -> "_circuit_pb.Circuit":
    """The `Circuit` message of `spec` (see the module's docstring). Shape errors raise
    `ValueError` here; type errors are the bus's to find, at apply."""
    if isinstance(spec, _circuit_pb.Circuit):
        return spec
    if isinstance(spec, pathlib.Path):
        spec = spec.read_text()
    if isinstance(spec, str):
        spec = tomllib.loads(spec)
    if not isinstance(spec, Mapping):
        raise TypeError(f"a circuit is a Circuit, a mapping, a Path or TOML text, not {type(spec).__name__}")
    unknown = set(spec) - {"name", "reality", "stages"}
    if unknown:
        raise ValueError(f"unknown circuit keys {sorted(unknown)}")
    circuit = _circuit_pb.Circuit(name=str(spec["name"]), reality_id=str(spec["reality"]))
    for stage in spec.get("stages", []):
        if not isinstance(stage, Mapping) or not set(stage) <= _STAGE_KEYS:
            raise ValueError(f"a stage has keys {sorted(_STAGE_KEYS)}, not {stage!r}")
        name = str(stage["name"])
        input_topic, input_type = _port(name, "input", stage.get("input"))
        output_topic, output_type = _port(name, "output", stage.get("output"))
        circuit.stages.add(
            name=name,
            operator=str(stage["operator"]),
            input_topic=input_topic,
            input_type=input_type,
            output_topic=output_topic,
            output_type=output_type,
        )
    return circuit


def _files(root: FileDescriptor, seen: dict) -> None:
    """`root` and what it imports, dependencies first (the order protoc writes)."""
    if root.name in seen:
        return
    for dep in root.dependencies:
        _files(dep, seen)
    proto = descriptor_pb2.FileDescriptorProto()
    root.CopyToProto(proto)
    seen[root.name] = proto


def descriptor_set(*message_classes: Iterable[type]) -> bytes:
    """The serialized `FileDescriptorSet` describing `message_classes` (generated protobuf
    classes) and every file they depend on: strict mode's `OperatorManifest.descriptor_set`."""
    seen: dict = {}
    for cls in message_classes:
        _files(cls.DESCRIPTOR.file, seen)  # type: ignore[attr-defined]
    return descriptor_pb2.FileDescriptorSet(file=list(seen.values())).SerializeToString()
