"""The class questions and scan comparisons over AnalysisService, as typed results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from maxact.client import types as t
from maxact.common import convert
from maxact.common.defaults import DEFAULT_SELECTIVE, DEFAULT_TOP_CHANNELS
from maxact.common.resources import scan_name
from maxact.v1 import analysis_service_pb2 as apb
from maxact.v1 import analysis_service_pb2_grpc


class AnalysisCalls:
    """client.analysis: classes(), class_channels(), compare(), class_names()."""

    def __init__(self, channel: grpc.Channel, call: Callable[[Callable[..., Any], Any], Any]):
        self._stub = analysis_service_pb2_grpc.AnalysisServiceStub(channel)
        self._call = call

    def classes(
        self,
        scan: str,
        layer: str,
        selective: float = DEFAULT_SELECTIVE,
        top: int = DEFAULT_TOP_CHANNELS,
    ) -> t.LayerClassAnswer:
        """Dead and non-selective channels, each class's selective and top channels, the
        uncovered classes and the most confusable class pairs of `layer`."""
        response = self._call(
            self._stub.GetClassAnswer,
            apb.GetClassAnswerRequest(
                scan=scan_name(scan), layer=layer, selective_threshold=selective, top=top
            ),
        )
        return convert.class_answer(response)

    def class_channels(
        self,
        scan: str,
        layer: str,
        class_name: str,
        top: int = DEFAULT_TOP_CHANNELS,
        k: int = 0,
        patch_size: int = 0,
        render: str = "rf",
        mask_quantile: float | None = None,
    ) -> t.ClassChannels:
        """The `top` channels that fire most for `class_name`, each with its top-k patches
        rendered as `render` (rf, heatmap or mask, as for `neuron`)."""
        request = apb.GetClassChannelsRequest(
            scan=scan_name(scan), layer=layer, class_name=class_name, top=top, k=k
        )
        convert.set_render(request, render, mask_quantile, patch_size)
        response = self._call(self._stub.GetClassChannels, request)
        return convert.class_channels(response, layer)

    def compare(self, scan_a: str, scan_b: str, layer: str) -> t.ScanComparison:
        """Per channel the overlap of the two scans' top-k images, firing rates and means."""
        response = self._call(
            self._stub.CompareScans,
            apb.CompareScansRequest(
                scan_a=scan_name(scan_a), scan_b=scan_name(scan_b), layer=layer
            ),
        )
        return convert.comparison(response)

    def class_names(self, model: str) -> t.ClassNames:
        """The model's output class names (NAME.labels.txt or metadata maxact.labels)."""
        response = self._call(self._stub.GetClassNames, apb.GetClassNamesRequest(model=model))
        return t.ClassNames(layer=response.layer, names=tuple(response.names))
