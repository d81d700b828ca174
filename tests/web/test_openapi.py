"""The OpenAPI document: what the server serves is docs/openapi.json, and it names every route
the server has, with the permission the server checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from jsonschema import Draft202012Validator

from gateway.core.availability import SCHEMA
from gateway.web.live import AvailabilityFeed
from gateway.web.openapi import document, render
from gateway.web.routes import BY_NAME
from gateway.web.server import WebServer
from tests.web.conftest import FakeLot, http_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


async def test_the_served_document_is_the_one_in_docs(server: WebServer) -> None:
    """If this fails after a change of the routes: python -m gateway.web.openapi >
    docs/openapi.json"""
    async with (aiohttp.ClientSession() as client,
                client.get(f"http://127.0.0.1:{server.port}/api/v1/openapi.json") as response):
        served = await response.json()
    assert served == json.loads(DOCS.read_text(encoding="utf-8")) == document()
    assert DOCS.read_text(encoding="utf-8") == render()


def test_every_route_of_the_server_is_in_the_document(lot: FakeLot,
                                                      feed: AvailabilityFeed) -> None:
    paths = document()["paths"]
    app = WebServer(lot, http_config(), feed).make_app()
    registered = {(route.method, route.resource.canonical, route.name or "")
                  for route in app.router.routes() if route.resource is not None}
    assert registered  # the router was read
    for method, path, name in registered:
        operation = paths[path][method.lower()]
        assert operation["operationId"] == name
        allow = BY_NAME[name].allow
        assert operation.get("x-permission") == allow
        assert (operation["security"] == []) == (allow is None)
    assert sum(len(ops) for ops in paths.values()) == len(registered)


def test_the_document_holds_valid_schemas() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["schemas"]["Availability"] == SCHEMA

    def schemas(node: Any) -> Any:
        if isinstance(node, dict):
            if "schema" in node and isinstance(node["schema"], dict):
                yield node["schema"]
            for value in node.values():
                yield from schemas(value)
        elif isinstance(node, list):
            for value in node:
                yield from schemas(value)

    found = list(schemas(doc["paths"])) + list(doc["components"]["schemas"].values())
    assert len(found) > 40
    for schema in found:
        Draft202012Validator.check_schema(schema)
    refs = {v for s in found for v in _refs(s)}
    for ref in refs:  # every local reference resolves
        if ref.startswith("#/components/"):
            node: Any = doc
            for part in ref[2:].split("/"):
                assert part in node, ref
                node = node[part]


def _refs(node: Any) -> Any:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
