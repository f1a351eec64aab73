"""The README's "Receptive fields as a library" example runs as written, on a model file,
without a server: nothing of gRPC, onnxruntime or the server's other packages is imported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnx

from .reference_nets import alexnet_v2

README = Path(__file__).parents[2] / "README.md"
SECTION = "## Receptive fields as a library"
NOT_IMPORTED = ("grpc", "onnxruntime", "maxact.server.models", "maxact.server.service")


def _example() -> str:
    """The first python block of the README section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python block under {SECTION!r}"
    return match.group(1)


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def test_the_readme_library_example_prints_alexnets_conv5_field_without_a_server(
    tmp_path: Path,
) -> None:
    model, ends = alexnet_v2(224)
    _rename(model, ends["alexnet_v2/conv5"], "conv5")
    onnx.save(model, tmp_path / "model.onnx")
    example = _example()
    assert len(example.strip().splitlines()) <= 6  # the promised five lines (and a blank)
    check = f"\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith({NOT_IMPORTED})))\n"
    script = tmp_path / "example.py"
    script.write_text(example + check, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    printed, imported = done.stdout.strip().splitlines()
    size, stride, padding, box = printed.split(" ", 3)
    assert (size, stride, padding) == ("163", "16", "64")  # the published conv5 field
    assert re.fullmatch(r"\(0, 0, \d+, \d+\)", box)
    assert imported == "[]"
