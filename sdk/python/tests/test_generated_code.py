"""The committed protobuf modules are exactly what scripts/gen_proto.py makes from proto/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SDK_DIR = Path(__file__).resolve().parents[1]
COMMITTED = SDK_DIR / "arqonbus" / "_proto"
SCRIPT = SDK_DIR / "scripts" / "gen_proto.py"
PINNED_GRPCIO_TOOLS = "1.78.0"


def tree(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_modules_match_proto(tmp_path: Path):
    grpc_tools = pytest.importorskip("grpc_tools", reason="pip install -e sdk/python[test] (grpcio-tools)")
    import importlib.metadata

    version = importlib.metadata.version("grpcio-tools")
    assert version == PINNED_GRPCIO_TOOLS, (
        f"grpcio-tools {version} is installed, the committed modules were generated with "
        f"{PINNED_GRPCIO_TOOLS} (pinned in pyproject.toml); pip install grpcio-tools=={PINNED_GRPCIO_TOOLS}"
    )
    del grpc_tools
    out = tmp_path / "_proto"
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    fresh, committed = tree(out), tree(COMMITTED)
    assert sorted(fresh) == sorted(committed), "generated file set differs; run scripts/gen_proto.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"committed modules differ from proto/ for {stale}; run python sdk/python/scripts/gen_proto.py"


def test_generated_modules_import_inside_the_package_only():
    """The modules import through `arqonbus._proto...`, never through a top-level `arqon`."""
    for path in COMMITTED.rglob("*.py*"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("from arqon.", "import arqon")), f"{path}: {line}"
    from arqonbus.proto import ArqonMessage, NvmJob

    assert ArqonMessage.__module__ == "arqonbus._proto.arqon.v1.arqon_pb2"
    assert NvmJob.DESCRIPTOR.full_name == "arqon.nvm.v1.NvmJob"
    assert importlib.util.find_spec("arqon") is None or "arqonbus" not in str(importlib.util.find_spec("arqon").origin)


def test_import_fixer_rewrites_cross_file_imports_and_rejects_unknown_forms():
    spec = importlib.util.spec_from_file_location("gen_proto", SCRIPT)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = "from arqon.v1 import arqon_pb2 as arqon_dot_v1_dot_arqon__pb2\nfrom google.protobuf import any_pb2\n"
    fixed = gen.fix_imports(text)
    assert "from arqonbus._proto.arqon.v1 import arqon_pb2 as arqon_dot_v1_dot_arqon__pb2" in fixed
    assert "from google.protobuf import any_pb2" in fixed
    with pytest.raises(SystemExit):
        gen.fix_imports("import arqon.v1.arqon_pb2\n")
