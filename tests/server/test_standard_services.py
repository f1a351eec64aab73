"""The standard gRPC services: health reports SERVING, reflection lists every maxact service."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

MAXACT_SERVICES = {
    "maxact.v1.ModelService",
    "maxact.v1.ReceptiveFieldService",
    "maxact.v1.DatasetService",
    "maxact.v1.TopKService",
    "maxact.v1.ScanService",
    "maxact.v1.NeuronService",
    "maxact.v1.AnalysisService",
}


def test_health_reports_serving_overall_and_per_service(server: object) -> None:
    with grpc.insecure_channel(server.address) as channel:  # type: ignore[attr-defined]
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", *sorted(MAXACT_SERVICES)]:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_every_maxact_service(server: object) -> None:
    with grpc.insecure_channel(server.address) as channel:  # type: ignore[attr-defined]
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
    assert names >= MAXACT_SERVICES
    assert "grpc.health.v1.Health" in names


def test_datasets_report_image_count_labels_and_size(client, data_root) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    for label, count in (("cats", 2), ("dogs", 3)):
        (data_root / "pets" / label).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8)).save(data_root / "pets" / label / f"{i}.png")
    (data_root / "pets" / "notes.txt").write_text("not an image")
    (summary,) = client.list_datasets()
    size = sum(p.stat().st_size for p in (data_root / "pets").rglob("*.png"))
    assert (summary.name, summary.image_count, summary.labels) == ("pets", 5, ("cats", "dogs"))
    assert summary.size_bytes == size
    assert client.get_dataset("pets") == summary
