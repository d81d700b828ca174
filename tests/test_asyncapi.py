"""docs/asyncapi.yaml holds together as the official AsyncAPI parser reads it.

Issue 18, item 6: the official parser (@asyncapi/parser, an npm package) resolves a `$ref`
by putting what it points to in its place, so any keyword beside a `$ref` is dropped without
a word. Every event type's schema was `$ref: envelope.json` beside the type's `properties`: the
parser gave the bare envelope for each of them (checked by hand with @asyncapi/parser 3.6.6).
The parser is not installed here (CI installs nothing at test time); these tests reproduce
its checks that matter to this document: every `$ref` resolves, no keyword that constrains
stands beside a `$ref`, each event message, dereferenced as the parser does, still tells its
type from the others, the content types fit the payloads, every channel declares the
parameters of its address, and every topic the gateway uses has its channel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from gateway.sync.topics import CONFIG_KINDS, Topics, check_reply_to

# PyYAML comes with the train extra (EasyOCR), which CI installs; an install without it (the
# arm64 run, a Pi) skips these checks rather than fail on a missing reader.
yaml = pytest.importorskip("yaml")

DOCS = Path(__file__).resolve().parents[1] / "docs"
SPEC_PATH = DOCS / "asyncapi.yaml"
# Keywords that only annotate: a parser that drops them beside a `$ref` loses no constraint.
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples",
                         "default", "deprecated", "readOnly", "writeOnly"})
JSON_TYPES = re.compile(r"^application/(json|[a-z0-9.+-]+\+json)$")


@cache  # read, never changed: the tests build what they need anew
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


@cache
def _load(path: Path) -> Any:
    if path == SPEC_PATH:
        return spec()
    return json.loads(path.read_text(encoding="utf-8"))


def resolve(ref: str, base: Path) -> tuple[Any, Path]:
    """What `ref`, written in the file `base`, points to, and the file it is in; KeyError or
    OSError when it points nowhere. Relative to the file, as the parser resolves."""
    address, _, pointer = ref.partition("#")
    path = (base.parent / address).resolve() if address else base
    node = _load(path)
    for token in filter(None, pointer.split("/")):
        key = token.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node, path


def refs(node: Any, base: Path, seen: set[tuple[Path, str]] | None = None,
         where: str = "") -> Iterator[tuple[str, dict[str, Any], Path]]:
    """Every object with a `$ref` in `node` and in all it refers to, each file part once:
    (where it is, the object, its file)."""
    seen = set() if seen is None else seen
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from refs(item, base, seen, f"{where}/{i}")
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$ref"), str):
        yield where, node, base
        key = (base, node["$ref"])
        if key not in seen:
            seen.add(key)
            try:
                target, file = resolve(node["$ref"], base)
            except (KeyError, IndexError, OSError, ValueError):
                pass  # reported by the test that resolves them
            else:
                yield from refs(target, file, seen, "#" + node["$ref"].partition("#")[2])
    for key, value in node.items():
        if key != "$ref":
            yield from refs(value, base, seen, f"{where}/{key}")


def dereferenced(node: Any, base: Path) -> Any:
    """`node` with each `$ref` object replaced whole by its target: the parser's result."""
    if isinstance(node, list):
        return [dereferenced(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str):
        target, file = resolve(node["$ref"], base)
        return dereferenced(target, file)
    return {key: dereferenced(value, base) for key, value in node.items()}


def messages() -> dict[str, dict[str, Any]]:
    return dict(spec()["components"]["messages"])


def event_messages() -> list[dict[str, Any]]:
    """The messages of the `events` channel."""
    return [resolve(ref["$ref"], SPEC_PATH)[0]
            for ref in spec()["channels"]["events"]["messages"].values()]


def content_type(message: dict[str, Any]) -> str:
    return str(message.get("contentType", spec()["defaultContentType"]))


def payload_schema(message: dict[str, Any]) -> Any:
    """The message's payload schema as the parser hands it on: a multi-format schema's
    `schema`, or the payload itself, dereferenced."""
    payload = message["payload"]
    schema = payload["schema"] if "schemaFormat" in payload else payload
    return dereferenced(schema, SPEC_PATH)


def event_examples() -> list[dict[str, Any]]:
    """The CloudEvents of docs/events.md, one or more per type."""
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    examples = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]
    return [e for e in examples if "specversion" in e]


def test_every_ref_resolves() -> None:
    broken = []
    for where, node, base in refs(spec(), SPEC_PATH):
        try:
            resolve(node["$ref"], base)
        except (KeyError, IndexError, OSError, ValueError) as e:
            broken.append(f"{base.name}{where}: {node['$ref']} ({e!r})")
    assert broken == []


def test_no_constraint_stands_beside_a_ref() -> None:
    """The parser would drop it silently (an annotation beside a `$ref` is only lost)."""
    dropped = sorted({f"{base.name}{where}: {sorted(set(node) - ANNOTATIONS - {'$ref'})}"
                      for where, node, base in refs(spec(), SPEC_PATH)
                      if set(node) - ANNOTATIONS - {"$ref"}})
    assert dropped == []


def test_every_event_message_keeps_its_type_through_the_parser() -> None:
    """Dereferenced as the parser does, each event type's payload takes its own events and
    refuses every other type's."""
    events = {m["name"]: payload_schema(m) for m in event_messages()
              if payload_schema(m).get("type") != "array"}
    examples = event_examples()
    assert {e["type"].removeprefix("org.parking.v1.") for e in examples} == set(events)
    for name, schema in events.items():
        validator = Draft202012Validator(schema)
        for example in examples:
            own = example["type"] == f"org.parking.v1.{name}"
            errors = list(validator.iter_errors(example))
            assert (errors == []) == own, (name, example["type"], errors[:1])


def test_an_event_batch_is_an_array_of_events_outside_the_mqtt_binding() -> None:
    (batch,) = [m for m in event_messages() if payload_schema(m).get("type") == "array"]
    assert content_type(batch) == "application/cloudevents-batch+json"
    assert "outside the CloudEvents MQTT binding" in " ".join(batch["description"].split())
    validator = Draft202012Validator(payload_schema(batch))
    validator.validate(event_examples()[:2])
    with pytest.raises(ValidationError):
        validator.validate(event_examples()[0])


def test_content_types_fit_the_payloads() -> None:
    """Text is declared as text (`online` is not JSON); JSON types carry objects or arrays;
    a single event is a structured-mode CloudEvent."""
    for key, message in messages().items():
        schema, kind = payload_schema(message), content_type(message)
        if schema.get("type") == "string":
            assert kind == "text/plain", key
        else:
            assert JSON_TYPES.match(kind), (key, kind)
            assert schema.get("type") in ("object", "array") or "allOf" in schema, key
    for message in event_messages():
        if payload_schema(message).get("type") != "array":
            assert content_type(message) == "application/cloudevents+json", message["name"]


def test_every_channel_declares_the_parameters_of_its_address() -> None:
    for name, channel in spec()["channels"].items():
        used = set(re.findall(r"\{([^}]+)\}", channel["address"]))
        assert used == set(channel.get("parameters", {})), name


def _channel_of(topic: str) -> str | None:
    for name, channel in spec()["channels"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(channel["address"]))
        if re.fullmatch(pattern, topic):
            return str(name)
    return None


def test_every_topic_the_gateway_uses_has_its_channel() -> None:
    topics = Topics("parking/v1", "lot-7", "gw-1")
    state_names = spec()["channels"]["state"]["parameters"]["name"]["enum"]
    reply_to = f"{topics.replies}/ops-42"
    check_reply_to(topics.replies, reply_to)  # a replyTo the gateway accepts
    used = {topics.events: "events", topics.presence: "presence",
            topics.commands: "commands", topics.replies: "replies",
            **{topics.state(n): "state" for n in state_names},
            **{topics.config(k): "config" for k in CONFIG_KINDS}}
    for topic, channel in used.items():
        assert _channel_of(topic) == channel, topic
    assert _channel_of(reply_to) not in (None, "replies")
