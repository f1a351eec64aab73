"""Core records -> whole API response messages: what the gRPC servicers answer and what the
HTTP face turns into its JSON documents (through the same converters the client uses), so
both faces say the same thing. No transport here."""

from __future__ import annotations

from maxact.common.class_answer import ClassChannel
from maxact.common.records import DatasetSummary, ModelSummary, TensorInfo
from maxact.server.core.analysis import ClassAnswerReport, ClassChannelsReport, Comparison
from maxact.server.core.models import ModelDescription
from maxact.server.core.neurons import StoredNeuron
from maxact.server.service.convert import (
    field_to_proto,
    neuron_patches_to_proto,
    preprocessing_to_proto,
    scan_to_proto,
)
from maxact.v1 import analysis_service_pb2 as apb
from maxact.v1 import dataset_service_pb2 as dpb
from maxact.v1 import model_service_pb2 as mpb
from maxact.v1 import neuron_service_pb2 as npb


def model_summary(summary: ModelSummary) -> mpb.ModelSummary:
    return mpb.ModelSummary(name=summary.name, size_bytes=summary.size_bytes, loaded=summary.loaded)


def tensor_info(tensor: TensorInfo) -> mpb.TensorInfo:
    return mpb.TensorInfo(
        name=tensor.name, element_type=tensor.element_type, shape=list(tensor.shape)
    )


def model_response(model: ModelDescription) -> mpb.GetModelResponse:
    """A model's inputs, default preprocessing and layers with their fields."""
    response = mpb.GetModelResponse(
        name=model.name,
        default_preprocessing=preprocessing_to_proto(model.default_preprocessing),
        input_height=model.input_size[0],
        input_width=model.input_size[1],
        inputs=[tensor_info(t) for t in model.inputs],
        outputs=[tensor_info(t) for t in model.outputs],
    )
    for layer in model.layers:
        message = mpb.Layer(
            name=layer.name, op=layer.op, shape=list(layer.shape), field_error=layer.field_error
        )
        if layer.field is not None:
            message.receptive_field.CopyFrom(field_to_proto(layer.field))
        response.layers.append(message)
    return response


def dataset_summary(dataset: DatasetSummary) -> dpb.DatasetSummary:
    return dpb.DatasetSummary(
        name=dataset.name,
        image_count=dataset.image_count,
        labels=list(dataset.labels),
        size_bytes=dataset.size_bytes,
        unreadable=dataset.unreadable,
    )


def neuron_response(answer: StoredNeuron) -> npb.GetNeuronResponse:
    record = answer.record
    return npb.GetNeuronResponse(
        images_scanned=record.images_done,
        mode=record.mode.to_proto(),
        scan=scan_to_proto(record),
        patches=neuron_patches_to_proto(answer),
    )


def class_channel(channel: ClassChannel) -> apb.ClassChannel:
    return apb.ClassChannel(
        channel=channel.channel,
        mean=channel.mean,
        contrast=channel.contrast,
        selectivity=channel.selectivity,
    )


def class_answer_response(report: ClassAnswerReport) -> apb.GetClassAnswerResponse:
    answer = report.answer
    response = apb.GetClassAnswerResponse(
        scan=scan_to_proto(report.scan),
        layer=report.layer,
        images_scanned=report.images_scanned,
        channels=answer.channels,
        dead=answer.dead,
        non_selective=answer.non_selective,
        uncovered=answer.uncovered,
    )
    for entry in answer.classes:
        response.classes.append(
            apb.ClassAnswer(
                name=entry.name,
                images=entry.images,
                selective_channels=entry.selective_channels,
                top_channels=[class_channel(c) for c in entry.top_channels],
                selective_details=[class_channel(c) for c in entry.selective],
            )
        )
    for pair in answer.confusable:
        response.confusable.append(
            apb.ConfusablePair(classes=pair.classes, similarity=pair.similarity)
        )
    return response


def class_channels_response(report: ClassChannelsReport) -> apb.GetClassChannelsResponse:
    response = apb.GetClassChannelsResponse(
        class_name=report.found.name,
        images=report.found.images,
        scan=scan_to_proto(report.scan),
    )
    for entry in report.channels:
        response.channels.append(
            apb.ClassChannelPatches(
                channel=class_channel(entry.channel), patches=neuron_patches_to_proto(entry.neuron)
            )
        )
    return response


def compare_response(comparison: Comparison) -> apb.CompareScansResponse:
    response = apb.CompareScansResponse(
        layer=comparison.layer,
        k=comparison.k,
        scan_a=scan_to_proto(comparison.scan_a),
        scan_b=scan_to_proto(comparison.scan_b),
    )
    for change in comparison.channels:
        response.channels.append(
            apb.ChannelChange(
                channel=change.channel,
                overlap=change.overlap,
                firing_rate_a=change.firing_rate[0],
                firing_rate_b=change.firing_rate[1],
                mean_a=change.mean[0],
                mean_b=change.mean[1],
            )
        )
    return response
