"""The architecture holds in the imports: no cycles between maxact's packages (counting imports
inside functions), and the light client never imports the server except the demo, which runs a
server in-process and needs the `server` extra."""

from __future__ import annotations

from tests.repo.import_graph import cycles, import_edges, unit, unit_edges


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


def test_the_server_takes_its_vocabulary_from_common_not_from_the_client() -> None:
    offending = sorted(
        (source, target)
        for source, targets in import_edges().items()
        if source.startswith("maxact.server")
        for target in targets
        if target.startswith("maxact.client")
    )
    assert offending == []


def test_common_imports_neither_the_client_nor_the_server() -> None:
    edges = import_edges()
    assert any(source.startswith("maxact.common.") for source in edges)
    offending = sorted(
        (source, target)
        for source, targets in edges.items()
        if source.startswith("maxact.common")
        for target in targets
        if target.startswith(("maxact.client", "maxact.server"))
    )
    assert offending == []
