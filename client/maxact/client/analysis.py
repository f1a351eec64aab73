"""The class questions and scan comparisons over AnalysisService, as typed results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from maxact.client import convert
from maxact.client import types as t
from maxact.common.defaults import DEFAULT_SELECTIVE, DEFAULT_TOP_CHANNELS
from maxact.common.resources import scan_id, scan_name
from maxact.v1 import analysis_service_pb2 as apb
from maxact.v1 import analysis_service_pb2_grpc


def _channel(message: apb.ClassChannel) -> t.ClassChannel:
    return t.ClassChannel(
        channel=message.channel,
        mean=message.mean,
        contrast=message.contrast,
        selectivity=message.selectivity,
    )


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
        return t.LayerClassAnswer(
            scan=scan_id(response.scan.name),
            layer=response.layer,
            images_scanned=response.images_scanned,
            channels=response.channels,
            dead=tuple(response.dead),
            non_selective=tuple(response.non_selective),
            classes=tuple(
                t.ClassAnswer(
                    name=c.name,
                    images=c.images,
                    selective_channels=tuple(c.selective_channels),
                    top_channels=tuple(_channel(x) for x in c.top_channels),
                    selective=tuple(_channel(x) for x in c.selective_details),
                )
                for c in response.classes
            ),
            uncovered=tuple(response.uncovered),
            confusable=tuple(
                t.ConfusablePair((p.classes[0], p.classes[1]), p.similarity)
                for p in response.confusable
            ),
        )

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
        return t.ClassChannels(
            scan=scan_id(response.scan.name),
            layer=layer,
            class_name=response.class_name,
            images=response.images,
            channels=tuple(
                t.ClassChannelPatches(
                    _channel(c.channel), tuple(convert.patch(p) for p in c.patches)
                )
                for c in response.channels
            ),
        )

    def compare(self, scan_a: str, scan_b: str, layer: str) -> t.ScanComparison:
        """Per channel the overlap of the two scans' top-k images, firing rates and means."""
        response = self._call(
            self._stub.CompareScans,
            apb.CompareScansRequest(
                scan_a=scan_name(scan_a), scan_b=scan_name(scan_b), layer=layer
            ),
        )
        return t.ScanComparison(
            a=scan_id(response.scan_a.name),
            b=scan_id(response.scan_b.name),
            layer=response.layer,
            k=response.k,
            channels=tuple(
                t.ChannelChange(
                    channel=c.channel,
                    overlap=c.overlap,
                    firing_rate=(c.firing_rate_a, c.firing_rate_b),
                    mean=(c.mean_a, c.mean_b),
                )
                for c in response.channels
            ),
        )

    def class_names(self, model: str) -> t.ClassNames:
        """The model's output class names (NAME.labels.txt or metadata maxact.labels)."""
        response = self._call(self._stub.GetClassNames, apb.GetClassNamesRequest(model=model))
        return t.ClassNames(layer=response.layer, names=tuple(response.names))
