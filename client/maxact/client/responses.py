"""A finished scan's per-image responses over ResponseService, as typed results: a channel's
histogram and quantile examples, per-channel labels, similar channels, the matrix itself."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from numpy.lib import format as npy

from maxact.client.errors import MaxactError, rpc_errors
from maxact.common.defaults import LABEL_AUC
from maxact.common.formatting import label_text
from maxact.common.resources import scan_name
from maxact.v1 import response_service_pb2 as rpb
from maxact.v1 import response_service_pb2_grpc


@dataclass(frozen=True)
class Histogram:
    """bins + 1 edges (smallest to largest response) and the images in each bin."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class QuantileExample:
    rank: int
    image: str
    score: float


@dataclass(frozen=True)
class QuantileExamples:
    """The quantile's value and the images nearest it, nearest first."""

    value: float
    examples: tuple[QuantileExample, ...]
    images_scanned: int


@dataclass(frozen=True)
class ChannelLabel:
    """The class a channel's responses separate best: ROC AUC, one-sided Mann-Whitney p,
    share of its top-k images in the class ("" and NaN: none)."""

    channel: int
    label: str
    auc: float
    p_value: float
    purity: float

    @property
    def shown(self) -> bool:
        """Whether the label is worth showing beside the channel (auc >= 0.75)."""
        return bool(self.label) and not math.isnan(self.auc) and self.auc >= LABEL_AUC


@dataclass(frozen=True)
class SimilarChannel:
    channel: int
    correlation: float


class ResponseCalls:
    """client.responses: histogram(), quantile(), labels(), similar(), export()."""

    def __init__(
        self,
        channel: grpc.Channel,
        call: Callable[[Callable[..., Any], Any], Any],
        server: str = "",
    ) -> None:
        self._stub = response_service_pb2_grpc.ResponseServiceStub(channel)
        self._call = call
        self._server = server

    def histogram(self, scan: str, layer: str, channel: int, bins: int = 50) -> Histogram:
        response = self._call(
            self._stub.GetResponseHistogram,
            rpb.GetResponseHistogramRequest(
                scan=scan_name(scan), layer=layer, channel=channel, bins=bins
            ),
        )
        return Histogram(tuple(response.edges), tuple(response.counts))

    def quantile(
        self, scan: str, layer: str, channel: int, quantile: float, k: int = 0
    ) -> QuantileExamples:
        """The k images (0: the scan's k) whose response is nearest the channel's quantile."""
        response = self._call(
            self._stub.GetQuantileExamples,
            rpb.GetQuantileExamplesRequest(
                scan=scan_name(scan), layer=layer, channel=channel, quantile=quantile, k=k
            ),
        )
        return QuantileExamples(
            response.value,
            tuple(QuantileExample(e.rank, e.image, e.score) for e in response.examples),
            response.images_scanned,
        )

    def labels(
        self, scan: str, layer: str, channels: list[int] | None = None
    ) -> list[ChannelLabel]:
        """Per channel (all, or `channels`) the class its responses separate best."""
        response = self._call(
            self._stub.GetResponseLabels,
            rpb.GetResponseLabelsRequest(
                scan=scan_name(scan), layer=layer, channels=channels or []
            ),
        )
        return [
            ChannelLabel(c.channel, c.label, c.auc, c.p_value, c.purity) for c in response.channels
        ]

    def shown_labels(self, scan: str, layer: str) -> dict[int, str]:
        """{channel: "LABEL (AUC a.bc)"} of the channels whose label is shown (auc >= 0.75);
        empty when the scan kept no responses or its dataset has no labels."""
        try:
            labels = self.labels(scan, layer)
        except MaxactError as error:
            if error.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
                return {}
            raise
        return {f.channel: label_text(f.label, f.auc) for f in labels if f.shown}

    def similar(self, scan: str, layer: str, channel: int, top: int = 10) -> list[SimilarChannel]:
        response = self._call(
            self._stub.GetSimilarChannels,
            rpb.GetSimilarChannelsRequest(
                scan=scan_name(scan), layer=layer, channel=channel, top=top
            ),
        )
        return [SimilarChannel(s.channel, s.correlation) for s in response.similar]

    def export(
        self, scan: str, layer: str, out: str | Path, ids: str | Path | None = None
    ) -> tuple[int, int]:
        """Write the layer's matrix R[image, channel] to `out` (.npy, float32, images in
        dataset order) and the image ids, one a line, to `ids`; returns its shape. Written
        block by block as it arrives: never the whole matrix in memory."""
        request = rpb.ExportResponsesRequest(scan=scan_name(scan), layer=layer)
        shape = (0, 0)
        with rpc_errors(self._server), open(out, "wb") as matrix:
            id_file = open(ids, "w", encoding="utf-8") if ids is not None else None  # noqa: SIM115
            try:
                for block in self._stub.ExportResponses(request):
                    if shape == (0, 0) and matrix.tell() == 0:
                        shape = (int(block.images), int(block.channels))
                        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
                        npy.write_array_header_2_0(matrix, header)
                    matrix.write(block.values)
                    if id_file is not None:
                        id_file.writelines(f"{image}\n" for image in block.image_ids)
            finally:
                if id_file is not None:
                    id_file.close()
        return shape


def load_matrix(path: str | Path) -> np.ndarray:
    """An exported matrix, memory-mapped (read-only)."""
    array: np.ndarray = np.load(path, mmap_mode="r")
    return array
