"""Class names beside a logits channel in `topk`, `neuron` and `layers` output (the model's
NAME.labels.txt or metadata key maxact.labels, read by the server)."""

from __future__ import annotations

import grpc

from maxact.client import types as t
from maxact.client.client import Client
from maxact.client.errors import MaxactError
from maxact.client.responses import ChannelLabel


def class_names(client: Client, model: str) -> t.ClassNames:
    """The model's output class names; none from a server that predates them."""
    try:
        return client.analysis.class_names(model)
    except MaxactError as error:
        if error.code == grpc.StatusCode.UNIMPLEMENTED:
            return t.ClassNames()
        raise


def output_label(client: Client, model: str, layer: str, channel: int) -> str | None:
    """The class name of `channel` when `layer` is the model's named flat output."""
    return class_names(client, model).label(layer, channel)


def response_label(client: Client, scan: str, layer: str, channel: int) -> ChannelLabel | None:
    """The label a scan's responses give `channel` when it is worth showing (auc >= 0.75);
    None when it is not, or the scan kept no responses or has no labels."""
    try:
        (found,) = client.responses.labels(scan, layer, [channel])
    except MaxactError as error:
        if error.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
            return None
        raise
    return found if found.shown else None


def labels_line(names: t.ClassNames) -> str:
    if not names.names:
        return ""
    shown = ", ".join(names.names[:8]) + (", ..." if len(names.names) > 8 else "")
    return f"\n{names.layer}: {len(names.names)} named classes ({shown})"
