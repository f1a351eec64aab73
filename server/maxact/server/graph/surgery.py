"""ONNX graph surgery: find the image input, and prune a graph to the tensors a request needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from maxact.common.kinds import Layout


@dataclass(frozen=True)
class ImageInput:
    """The graph input that takes images, and what its declared shape fixes."""

    name: str
    shape: tuple[int | None, ...]  # None: dynamic
    layout: Layout
    elem_type: int

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        h, w = (self.shape[2], self.shape[3]) if self.layout == Layout.NCHW else self.shape[1:3]
        return (h, w) if h is not None and w is not None else None

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0]


def detect_layout(dims: list[int]) -> Layout:
    """NCHW when dim 1 is 3 or 1, NHWC when the last dim is; else the smaller known dim is C
    (0 = unknown). One rule for the layer catalogue and the receptive-field engine."""
    if dims[1] in (1, 3):
        return Layout.NCHW
    if dims[3] in (1, 3):
        return Layout.NHWC
    if dims[1] and dims[3] and dims[3] < dims[1]:
        return Layout.NHWC
    return Layout.NCHW


def image_input(model: onnx.ModelProto) -> ImageInput:
    """The first 4-D graph input that is not an initializer; layout by `detect_layout`."""
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tensor_type.shape.dim
        )
        if len(dims) != 4:
            continue
        layout = detect_layout([d or 0 for d in dims])
        return ImageInput(value.name, dims, layout, tensor_type.elem_type)
    raise ValueError("the model has no 4-D image input (expected [N, C, H, W] or [N, H, W, C])")


def used_names(node: onnx.NodeProto) -> set[str]:
    """Every outer-scope tensor a node reads, including those its subgraphs (If/Loop) capture."""
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        graphs = list(attribute.graphs)
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        for subgraph in graphs:
            defined = {i.name for i in subgraph.input} | {i.name for i in subgraph.initializer}
            for sub_node in subgraph.node:
                names |= used_names(sub_node) - defined
                defined |= set(sub_node.output)
    return names


def prune_to_outputs(
    model: onnx.ModelProto, outputs: Iterable[str], elem_types: dict[str, int] | None = None
) -> onnx.ModelProto:
    """A copy whose graph outputs are exactly `outputs` and which keeps only the nodes they need.

    onnxruntime can only return graph outputs, and anything after the requested tensors is
    wasted work, so the scan runs this graph rather than the original.
    """
    wanted = list(dict.fromkeys(outputs))
    producer: dict[str, int] = {}
    for index, node in enumerate(model.graph.node):
        for name in node.output:
            producer[name] = index
    keep: set[int] = set()
    needed: set[str] = set()
    stack = list(wanted)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        made_by = producer.get(name)
        if made_by is None or made_by in keep:
            continue
        keep.add(made_by)
        stack.extend(used_names(model.graph.node[made_by]))

    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    nodes = [node for index, node in enumerate(model.graph.node) if index in keep]
    del graph.node[:]
    graph.node.extend(nodes)
    initializers = [init for init in model.graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    inputs = [value for value in model.graph.input if value.name in needed]
    del graph.input[:]
    graph.input.extend(inputs)
    known_types = dict(elem_types or {})
    for value in list(model.graph.value_info) + list(model.graph.output):
        if value.type.tensor_type.elem_type:
            known_types.setdefault(value.name, value.type.tensor_type.elem_type)
    del graph.output[:]
    for name in wanted:
        graph.output.append(
            helper.make_tensor_value_info(name, known_types.get(name, TensorProto.FLOAT), None)
        )
    return pruned


def with_symbolic_batch(model: onnx.ModelProto, name: str = "N") -> onnx.ModelProto:
    """A copy whose graph inputs and outputs have a symbolic batch dimension.

    Exporters often fix the batch at 1. Dim 0 of every non-initializer input and of every
    output becomes `name`, and intermediate value_info (whose shapes said 1) is dropped. Graphs
    that hard-code the batch elsewhere (a Reshape to [1, -1]) still run but compute the wrong
    thing, so callers must verify the result (see `scan.batching`).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    initializers = {init.name for init in graph.initializer}
    for value in list(graph.input) + list(graph.output):
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].Clear()
            dims[0].dim_param = name
    del graph.value_info[:]
    return copy
