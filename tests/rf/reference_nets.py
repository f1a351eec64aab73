"""Reference CNNs rebuilt with onnx.helper for the receptive-field table (random weights).

Each builder reproduces the layer geometry of a TF-Slim network (kernels, strides, VALID /
SAME padding, branches, residual additions) at a tiny channel width: receptive fields depend
on the geometry only, so the published numbers of the full networks apply. TF's SAME padding
with a stride puts the odd pixel at the end, which is ONNX's `auto_pad="SAME_UPPER"`; Slim's
`conv2d_same` (ResNet) pads explicitly by (k - 1) // 2 and then runs VALID.

A builder returns the model and its end points: the published end-point name -> the tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from .builders import Net

WIDTH = 4  # channels per convolution: enough for branches, small enough to build fast

EndPoints = dict[str, str]


def _conv(net: Net, x: str, k: int | tuple[int, int], stride: int = 1, pad: str = "SAME") -> str:
    """Conv + ReLU as Slim's `conv2d`: SAME (TF rule) or VALID padding."""
    if pad == "VALID":
        conv = net.conv(x, WIDTH, k, stride, pad=0)
    elif stride == 1:
        conv = net.conv(x, WIDTH, k)  # odd kernels: symmetric k // 2
    else:
        conv = net.conv(x, WIDTH, k, stride, auto_pad="SAME_UPPER")
    return net.relu(conv)


def _pool(net: Net, x: str, k: int, stride: int, pad: str = "VALID", op: str = "MaxPool") -> str:
    if pad == "VALID":
        return net.pool(x, k, stride, op)
    if stride == 1:
        return net.pool(x, k, stride, op, pads=[k // 2] * 4)
    return net.pool(x, k, stride, op, auto_pad="SAME_UPPER")


def _concat(net: Net, parts: list[str]) -> str:
    return str(net.op("Concat", parts, sum(net.ch[p] for p in parts), axis=1))


def alexnet_v2(size: int) -> tuple[onnx.ModelProto, EndPoints]:
    net = Net((size, size))
    ends: EndPoints = {}
    x = ends["alexnet_v2/conv1"] = _conv(net, "x", 11, 4, "VALID")
    x = ends["alexnet_v2/pool1"] = _pool(net, x, 3, 2)
    x = ends["alexnet_v2/conv2"] = _conv(net, x, 5)
    x = _pool(net, x, 3, 2)
    for name in ("conv3", "conv4", "conv5"):
        x = ends[f"alexnet_v2/{name}"] = _conv(net, x, 3)
    ends["alexnet_v2/pool5"] = _pool(net, x, 3, 2)
    return net.model(list(ends.values())), ends


def vgg_16(size: int) -> tuple[onnx.ModelProto, EndPoints]:
    net = Net((size, size))
    ends: EndPoints = {}
    x = "x"
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, convs + 1):
            x = ends[f"vgg_16/conv{block}/conv{block}_{i}"] = _conv(net, x, 3)
        x = ends[f"vgg_16/pool{block}"] = _pool(net, x, 2, 2)
    return net.model(list(ends.values())), ends


def _mixed_5(net: Net, x: str) -> str:
    """Inception v3 35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg 3x3-1x1."""
    b0 = _conv(net, x, 1)
    b1 = _conv(net, _conv(net, x, 1), 5)
    b2 = _conv(net, _conv(net, _conv(net, x, 1), 3), 3)
    b3 = _conv(net, _pool(net, x, 3, 1, "SAME", "AveragePool"), 1)
    return _concat(net, [b0, b1, b2, b3])


def _mixed_6(net: Net, x: str) -> str:
    """Inception v3 17x17 block: factorised 7x7 branches (1x7 and 7x1)."""
    b0 = _conv(net, x, 1)
    b1 = _conv(net, _conv(net, _conv(net, x, 1), (1, 7)), (7, 1))
    b2 = _conv(net, x, 1)
    for k in ((7, 1), (1, 7), (7, 1), (1, 7)):
        b2 = _conv(net, b2, k)
    b3 = _conv(net, _pool(net, x, 3, 1, "SAME", "AveragePool"), 1)
    return _concat(net, [b0, b1, b2, b3])


def _mixed_7(net: Net, x: str) -> str:
    """Inception v3 8x8 block: branches that split into 1x3 and 3x1 and concatenate."""

    def split(y: str) -> str:
        return _concat(net, [_conv(net, y, (1, 3)), _conv(net, y, (3, 1))])

    b0 = _conv(net, x, 1)
    b1 = split(_conv(net, x, 1))
    b2 = split(_conv(net, _conv(net, x, 1), 3))
    b3 = _conv(net, _pool(net, x, 3, 1, "SAME", "AveragePool"), 1)
    return _concat(net, [b0, b1, b2, b3])


def inception_v3(size: int) -> tuple[onnx.ModelProto, EndPoints]:
    net = Net((size, size))
    ends: EndPoints = {}
    x = ends["Conv2d_1a_3x3"] = _conv(net, "x", 3, 2, "VALID")
    x = ends["Conv2d_2a_3x3"] = _conv(net, x, 3, 1, "VALID")
    x = ends["Conv2d_2b_3x3"] = _conv(net, x, 3)
    x = ends["MaxPool_3a_3x3"] = _pool(net, x, 3, 2)
    x = ends["Conv2d_3b_1x1"] = _conv(net, x, 1, 1, "VALID")
    x = ends["Conv2d_4a_3x3"] = _conv(net, x, 3, 1, "VALID")
    x = ends["MaxPool_5a_3x3"] = _pool(net, x, 3, 2)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = ends[name] = _mixed_5(net, x)
    deep = _conv(net, _conv(net, _conv(net, x, 1), 3), 3, 2, "VALID")
    x = ends["Mixed_6a"] = _concat(net, [_conv(net, x, 3, 2, "VALID"), deep, _pool(net, x, 3, 2)])
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = ends[name] = _mixed_6(net, x)
    b0 = _conv(net, _conv(net, x, 1), 3, 2, "VALID")
    b1 = _conv(net, _conv(net, _conv(net, _conv(net, x, 1), (1, 7)), (7, 1)), 3, 2, "VALID")
    x = ends["Mixed_7a"] = _concat(net, [b0, b1, _pool(net, x, 3, 2)])
    for name in ("Mixed_7b", "Mixed_7c"):
        x = ends[name] = _mixed_7(net, x)
    return net.model(list(ends.values())), ends


def mobilenet_v1(size: int) -> tuple[onnx.ModelProto, EndPoints]:
    net = Net((size, size))
    ends: EndPoints = {}
    x = ends["Conv2d_0"] = _conv(net, "x", 3, 2)
    strides = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
    for i, stride in enumerate(strides, start=1):
        pad: dict[str, object] = (
            {"auto_pad": "SAME_UPPER"} if stride > 1 else {"pads": [1, 1, 1, 1]}
        )
        depthwise = net.relu(net.conv(x, net.ch[x], 3, stride, group=net.ch[x], **pad))
        x = ends[f"Conv2d_{i}_pointwise"] = _conv(net, depthwise, 1)
    return net.model(list(ends.values())), ends


def _conv2d_same(net: Net, x: str, k: int, stride: int) -> str:
    """Slim's `conv2d_same`: explicit padding (k - 1) // 2 before and after, then VALID."""
    if stride == 1:
        return _conv(net, x, k)
    begin, end = (k - 1) // 2, (k - 1) - (k - 1) // 2
    return net.relu(net.conv(x, WIDTH, k, stride, pads=[begin, begin, end, end]))


def _bottleneck(net: Net, x: str, stride: int, project: bool) -> str:
    """ResNet v1 bottleneck: 1x1, 3x3 (strided), 1x1, plus the shortcut."""
    if project:
        shortcut = net.conv(x, WIDTH, 1, stride, pad=0)
    elif stride > 1:  # Slim's subsample: a 1x1 max pool with the stride
        shortcut = net.pool(x, 1, stride)
    else:
        shortcut = x
    y = _conv(net, x, 1)
    y = _conv2d_same(net, y, 3, stride)
    y = net.conv(y, WIDTH, 1)
    return net.relu(str(net.op("Add", [y, shortcut])))


def resnet_v1_50(size: int) -> tuple[onnx.ModelProto, EndPoints]:
    net = Net((size, size))
    ends: EndPoints = {}
    x = _conv2d_same(net, "x", 7, 2)
    x = _pool(net, x, 3, 2, "SAME")
    # Slim puts each block's stride on its LAST unit; block4 keeps the stride
    for block, (units, stride) in enumerate(((3, 2), (4, 2), (6, 2), (3, 1)), start=1):
        for unit in range(units):
            last = unit == units - 1
            x = _bottleneck(net, x, stride if last else 1, project=unit == 0)
        ends[f"resnet_v1_50/block{block}"] = x
    return net.model(list(ends.values())), ends


BUILDERS: dict[str, Callable[[int], tuple[onnx.ModelProto, EndPoints]]] = {
    "alexnet_v2": alexnet_v2,
    "vgg_16": vgg_16,
    "inception_v3": inception_v3,
    "mobilenet_v1": mobilenet_v1,
    "resnet_v1_50": resnet_v1_50,
}
