"""The architecture holds in the imports: no cycles between maxact's packages (counting imports
inside functions), and the light client never imports the server except the demo, which runs a
server in-process and needs the `server` extra. Only the gRPC face of the server (service/,
ops/ and the assembly: app, __main__, healthcheck) imports grpc: the core speaks no transport."""

from __future__ import annotations

from tests.repo.import_graph import cycles, external_imports, import_edges, unit, unit_edges

# the units of the server allowed to import grpc (and its companions)
GRPC_FACE = {"server.service", "server.ops", "server.app", "server.__main__", "server.healthcheck"}
TRANSPORT = {"grpc", "grpc_status", "grpc_health", "grpc_reflection"}


def grpc_importers_outside_the_face(
    imports: dict[str, set[str]],
) -> list[tuple[str, list[str]]]:
    """(module, the transport packages it imports) for each server module outside the face."""
    return sorted(
        (module, sorted(names & TRANSPORT))
        for module, names in imports.items()
        if module.startswith("maxact.server")
        and names & TRANSPORT
        and unit(module) not in GRPC_FACE
    )


def test_the_import_graph_sees_imports_inside_functions() -> None:
    # demo/run.py imports the server inside a function only (the server extra is optional)
    assert "maxact.server.app" in import_edges()["maxact.client.demo.run"]


def test_there_is_no_import_cycle_between_maxact_packages() -> None:
    edges = unit_edges()
    found = cycles({source: set(targets) for source, targets in edges.items()})
    explained = [
        {
            f"{a} -> {b}": edges[a][b][:3]
            for a in component
            for b in component
            if b in edges.get(a, {})
        }
        for component in found
    ]
    assert found == [], f"import cycles between packages: {explained}"


def test_the_units_are_the_subpackages_and_the_top_level_modules() -> None:
    assert unit("maxact.server.scan.engine") == "server.scan"
    assert unit("maxact.client.cli.main") == "client.cli"
    assert unit("maxact.server.app") == "server.app"
    assert unit("maxact.v1.scan_service_pb2") == "v1"


def test_the_client_imports_the_server_only_in_the_demo() -> None:
    offending = sorted(
        (source, target)
        for source, targets in import_edges().items()
        if source.startswith("maxact.client.") and not source.startswith("maxact.client.demo")
        for target in targets
        if target.startswith("maxact.server")
    )
    assert offending == []


def test_the_cycle_finder_finds_a_cycle_and_only_the_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_grpc_face_of_the_server_imports_grpc() -> None:
    assert grpc_importers_outside_the_face(external_imports()) == []


def test_the_grpc_check_flags_a_core_module_that_imports_grpc() -> None:
    imports = {
        "maxact.server.core.topk": {"numpy", "grpc"},
        "maxact.server.errors": {"grpc_status"},
        "maxact.server.service.errors": {"grpc"},
        "maxact.server.app": {"grpc"},
    }
    assert grpc_importers_outside_the_face(imports) == [
        ("maxact.server.core.topk", ["grpc"]),
        ("maxact.server.errors", ["grpc_status"]),
    ]


def test_the_import_walker_sees_the_servicers_import_grpc() -> None:
    assert "grpc" in external_imports()["maxact.server.service.errors"]


def test_the_core_speaks_no_transport() -> None:
    # core/ turns records into records: no API messages, no servicer, no interceptor
    offending = sorted(
        (source, target)
        for source, targets in import_edges().items()
        if unit(source) == "server.core"
        for target in targets
        if unit(target) in {"v1", "server.service", "server.ops", "server.app"}
    )
    assert offending == []
    assert "maxact.server.core.topk" in import_edges()  # the check sees core/
