"""The OpenAPI document (``transport/openapi.json``) matches the app's real routes, is a
loadable OpenAPI 3.1 document, and is what the node serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import schemathesis
import trio
from schemathesis.core.result import Ok
from starlette.routing import Route

from safekeeper_recovery.transport._http_app import openapi_document

from ._http_support import start_http_node

DOC_FILE = Path(__file__).resolve().parents[2] / "safekeeper_recovery/transport/openapi.json"
METHODS = {"get", "post", "put", "delete", "patch"}


def documented() -> dict[tuple[str, str], set[str]]:
    """``(path, method) -> the names of its path parameters``, from the document."""
    doc = json.loads(DOC_FILE.read_text())
    params = doc["components"]["parameters"]
    found: dict[tuple[str, str], set[str]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert method in METHODS, f"{path}: unexpected key {method}"
            names = set()
            for p in op.get("parameters", []):
                p = params[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                if p["in"] == "path":
                    names.add(p["name"])
            found[(path, method)] = names
    return found


async def test_document_lists_exactly_the_apps_routes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_http_node(nursery, tmp_path)
    routes: dict[tuple[str, str], set[str]] = {}
    for route in node.app.routes:
        assert isinstance(route, Route)
        assert route.methods is not None
        for method in route.methods - {"HEAD"}:
            routes[(route.path, method.lower())] = set(re.findall(r"{(\w+)}", route.path))
    assert routes == documented()


async def test_node_serves_the_document_from_the_repository(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_http_node(nursery, tmp_path)
    response = await node.client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(DOC_FILE.read_text())
    assert openapi_document() == DOC_FILE.read_bytes()


def test_document_is_loadable_openapi_with_one_operation_per_route() -> None:
    schema = schemathesis.openapi.from_dict(json.loads(DOC_FILE.read_text()))
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # an operation the loader refused
        operations.append(result.ok())
    assert {(op.path, op.method.lower()) for op in operations} == set(documented())
