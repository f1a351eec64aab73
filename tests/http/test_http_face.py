"""The HTTP face of the real server: served beside gRPC, the token, the JSON errors."""

from __future__ import annotations

import httpx

from maxact.server.app import RunningServer
from tests.http.conftest import TOKEN


def test_models_and_datasets_are_served_over_http_beside_grpc(
    http_server: RunningServer, api: httpx.Client
) -> None:
    assert http_server.http_port not in (None, 0, http_server.port)
    models = api.get("/api/v1/models").json()["models"]
    assert [(m["name"], m["loaded"]) for m in models] == [("net", False)]
    datasets = api.get("/api/v1/datasets").json()["datasets"]
    assert [(d["name"], d["image_count"]) for d in datasets] == [("squares", 6)]


def test_unknown_route_answers_the_json_error_document(api: httpx.Client) -> None:
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"
    assert response.json()["error"]["reason"] == "ROUTE_NOT_FOUND"


def test_a_missing_or_wrong_token_gets_401_with_the_json_error(
    token_server: RunningServer,
) -> None:
    with httpx.Client(base_url=token_server.http_url, timeout=30) as client:
        missing = client.get("/api/v1/models")
        wrong = client.get("/api/v1/models", headers={"Authorization": "Bearer nope"})
        by_header = client.get("/api/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
        client.cookies.set("maxact_token", TOKEN)
        by_cookie = client.get("/api/v1/models")
    assert missing.status_code == 401
    assert missing.json()["error"] == {
        "code": 401,
        "status": "UNAUTHENTICATED",
        "reason": "TOKEN_MISSING",
        "message": missing.json()["error"]["message"],
    }
    assert wrong.status_code == 401 and wrong.json()["error"]["reason"] == "TOKEN_INVALID"
    assert by_header.status_code == 200 and by_cookie.status_code == 200
