"""The HTTP API's OpenAPI 3.1 document, written from the route table.

The server serves it at /api/v1/openapi.json; docs/openapi.json is the same document, written
out with `python -m gateway.web.openapi > docs/openapi.json` (a test checks they agree).
"""

from __future__ import annotations

import json
from typing import Any

from gateway import __version__
from gateway.core.availability import SCHEMA
from gateway.web.routes import ROUTES, Route

ERRORS = {
    "400": "A parameter or the body is not as described (`invalid_params`, `bad_request`).",
    "401": "No credentials, or wrong ones (`unauthenticated`).",
    "403": "The caller's role may not do this, or an action lacks its CSRF token"
           " (`forbidden`).",
    "404": "No bay where a filter looks, or no such file of the console (`not_found`); for"
           " pay on foot, no car inside by that plate or ticket (`not_found`, `bad_ticket`,"
           " `no_tickets`).",
    "409": "The lot refused (`refused`): no such lane, bay or alarm, a lane out of order;"
           " the message says which. Pay on foot: a plate that matches two cars"
           " (`ambiguous`), an amount or currency that is not what is due (`amount_mismatch`,"
           " `wrong_currency`, `nothing_due`), a reference used for another payment"
           " (`reference_reused`).",
    "413": "The body is larger than `http.max_body_bytes`.",
    "415": "The body is not sent as application/json.",
    "429": "Too many failed logins (`too_many_failures`); see Retry-After.",
    "503": "Not ready yet, too many live streams, or a payment the journal could not take"
           " (`unavailable`; see Retry-After).",
}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}},
        "required": ["code", "message"]}},
    "required": ["error"],
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"session": []}]


def document() -> dict[str, Any]:
    bodies = {route.body.__name__: route.body.model_json_schema(by_alias=True)
              for route in ROUTES if route.body is not None}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "parking-gateway local API",
            "version": __version__,
            "description": (
                "The lot controller's local HTTP API (docs/http.md). Roles: viewer"
                " (availability), technician (everything, and the actions), device"
                " (availability, and pay on foot: a pay station, one account each)."
                " Authenticate with `Authorization: Bearer <account>.<secret>`, or log in"
                " for a session cookie; with the cookie, an action needs `X-CSRF-Token`."),
        },
        "paths": paths,
        "components": {
            "schemas": {"Availability": SCHEMA, "Error": ERROR_SCHEMA, **bodies},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "An API token made by `parking-gateway user add"
                                          " --token`."},
                "session": {"type": "apiKey", "in": "cookie", "name": "pgw_session",
                            "description": "Set by POST /api/v1/login."},
            },
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "responses": {"200": {"description": "OK",
                              "content": {route.media: {"schema": route.response}}}},
    }
    if route.allow is None:
        op["security"] = []
    else:
        op["security"] = SECURITY
        op["x-permission"] = route.allow
    if route.params:
        op["parameters"] = [{"name": p.name, "in": p.where, "required": p.where == "path",
                             "description": p.description, "schema": p.schema}
                            for p in route.params]
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}}}
    for code in _errors(route):
        op["responses"][code] = {"description": ERRORS[code], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return op


def _errors(route: Route) -> list[str]:
    codes = set()
    if route.allow is not None:
        codes |= {"401", "403"}
    if route.params or route.body is not None:
        codes.add("400")
    if route.body is not None:
        codes |= {"413", "415"}
    if route.name in ("availability", "availability_stream", "static"):
        codes.add("404")
    if route.name == "static":
        codes.discard("400")  # a name that is not the console's is not found
    if route.allow == "act":
        codes.add("409")
    if route.name == "login":
        codes |= {"401", "429"}
    if route.name in ("readyz", "availability", "availability_stream"):
        codes.add("503")
    if route.allow == "pay":
        codes |= {"404", "409", "503"}
    return sorted(codes)


def render() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
