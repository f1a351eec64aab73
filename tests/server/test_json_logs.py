"""`maxact serve --log-format json`: every line it writes (stdout and stderr) is one JSON
object, and the lines of one call carry that call's request id."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import grpc
import pytest

from maxact.client import Client
from maxact.v1 import model_service_pb2, model_service_pb2_grpc
from tests.onnx_models import bright_square_model, save
from tests.serve_process import serve_process

pytestmark = pytest.mark.slow  # a `maxact serve` subprocess


def test_every_log_line_of_serve_with_json_format_is_one_json_object(tmp_path: Path) -> None:
    save(bright_square_model(64), tmp_path / "models", "net")
    with tempfile.TemporaryFile("w+") as stderr:
        with serve_process(
            "--model-root",
            str(tmp_path / "models"),
            env={"MAXACT_LOG_FORMAT": "json"},  # like every `serve` flag, from the environment
            stderr_to=stderr,
        ) as (process, address):
            with grpc.insecure_channel(address) as channel:
                stub = model_service_pb2_grpc.ModelServiceStub(channel)
                stub.ListModels(
                    model_service_pb2.ListModelsRequest(),
                    timeout=10,
                    metadata=[("x-request-id", "req-json-1")],
                )
                with pytest.raises(grpc.RpcError):
                    stub.GetModel(
                        model_service_pb2.GetModelRequest(name="nope"),
                        timeout=10,
                        metadata=[("x-request-id", "req-json-2")],
                    )
            with Client(address, timeout=30) as client:  # a call that logs from deep inside
                client.upload_model(tmp_path / "models" / "net.onnx", "copy")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
            assert process.stdout is not None
            stdout = process.stdout.read()
        stderr.seek(0)
        lines = [line for line in (stdout + stderr.read()).splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert all(isinstance(doc, dict) for doc in documents)
    calls = {
        doc["request_id"]: doc for doc in documents if doc.get("logger") == "maxact.server.rpc"
    }
    assert calls["req-json-1"]["code"] == "OK"
    assert calls["req-json-1"]["method"].endswith("/ListModels")
    assert calls["req-json-2"]["code"] == "NOT_FOUND"
    assert any("shutting down" in doc["message"] for doc in documents)
    # the upload's own log line, written far below the servicer, carries the call's request id
    uploaded = next(doc for doc in documents if doc["message"].startswith("model copy uploaded"))
    upload_call = next(doc for doc in documents if doc.get("method", "").endswith("/UploadModel"))
    assert uploaded["request_id"] == upload_call["request_id"] != ""
