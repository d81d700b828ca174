"""The event catalogue: builders, schemas and docs agree, and the envelope holds its contract."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import pytest
from jsonschema import Draft202012Validator, ValidationError

from gateway.core import events
from gateway.core.events import (
    Event,
    EventType,
    envelope_json,
    make_event,
    rfc3339,
    segment,
    source_uri,
    uuid7,
)
from tests.core.schemas import (
    SHARED,
    event_type_names,
    inlined,
    registry,
    schemas,
    validate_cloudevent,
)

AT = datetime(2026, 3, 2, 8, 0, 0, 123456, tzinfo=UTC)
SOURCE = source_uri("lot-7", "gw-1")
EUR_250: events.Money = {"amountMinor": 250, "currency": "EUR"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"

# Per event type: builder arguments that set every optional field ("full"), and that
# leave every optional field out ("minimal").
_SESSION_FULL: dict[str, Any] = {
    "session_id": "0195a1b2-0000-7000-8000-000000000001",
    "lane_id": "entry-1",
    "actual_start": AT,
    "credentials": [{"type": "licensePlate", "identifier": "AB123CD", "confidence": 0.97}],
    "segments": [segment(start=AT, end=AT + timedelta(hours=1), rate_table_id="standard",
                         amount=EUR_250)],
    "right": {"kind": "reservation", "reference": "res-42"},
    "clock": {"synchronized": False, "reliable": False, "reason": "wall clock not synchronised"},
    "vehicle": {"plate": "AB123CD", "plateCountry": "FR"},
    "transactions": [{"type": "payment", "amount": EUR_250, "reference": "pay-9"}],
}
_SESSION_MINIMAL: dict[str, Any] = {
    "session_id": "s-1",
    "lane_id": "entry-1",
    "actual_start": AT,
    "credentials": [{"type": "ticket", "identifier": "T-1001"}],
    "segments": [segment(start=AT)],
    "right": {"kind": "visitor"},
    "clock": {"synchronized": True, "reliable": True},
}
_END = AT + timedelta(hours=2, minutes=5)

EXAMPLES: dict[EventType, tuple[dict[str, Any], dict[str, Any]]] = {
    EventType.SESSION_STARTED: (_SESSION_FULL, _SESSION_MINIMAL),
    EventType.SESSION_ENDED: (
        {**_SESSION_FULL, "lane_id": "exit-1", "actual_end": _END, "duration_seconds": 7500,
         "currency": "EUR", "exit_reason": "manual_vend",
         "fee_lines": [{"code": "hourly", "description": "3 h at 2.50", "amountMinor": 750},
                       {"code": "validation", "description": "Shop validation",
                        "amountMinor": -250}]},
        {**_SESSION_MINIMAL, "lane_id": "exit-1", "segments": [segment(start=AT, end=_END)],
         "actual_end": _END, "duration_seconds": 0, "currency": "EUR", "fee_lines": []},
    ),
    EventType.GATE_OPENED: (
        {"lane_id": "exit-1", "gate_id": "barrier-1", "reason": "command", "session_id": "s-1",
         "command_id": "cmd-7"},
        {"lane_id": "entry-1", "gate_id": "barrier-1", "reason": "decision"},
    ),
    EventType.GATE_CLOSED: (
        {"lane_id": "exit-1", "gate_id": "barrier-1", "reason": "command", "session_id": "s-1",
         "command_id": "cmd-8"},
        {"lane_id": "entry-1", "gate_id": "barrier-1", "reason": "vehicle_passed"},
    ),
    EventType.BAY_CHANGED: (
        {"bay_id": "B-12", "floor": "-1", "zone": "B", "bay_type": "ev", "state": "occupied",
         "previous_state": "free", "source": "magnetic", "sensor_healthy": True},
    ) * 2,
    EventType.ALARM_RAISED: (
        {"alarm_id": "journal.over_capacity", "code": "journal.over_capacity",
         "severity": "critical", "message": "journal over its size cap", "component": "journal",
         "details": {"usedBytes": 600_000_000, "capBytes": 536_870_912}},
        {"alarm_id": "bay.B-12.sensor_offline", "code": "sensor_offline", "severity": "warning",
         "message": "no reading for 60 s", "component": "occupancy"},
    ),
    EventType.ALARM_CLEARED: (
        {"alarm_id": "journal.over_capacity", "code": "journal.over_capacity",
         "severity": "info", "message": "journal back under its size cap",
         "component": "journal", "details": {"usedBytes": 400_000_000}},
        {"alarm_id": "bay.B-12.sensor_offline", "code": "sensor_offline", "severity": "info",
         "message": "readings again", "component": "occupancy"},
    ),
    EventType.VIOLATION_DETECTED: (
        {"kind": "tailgating", "lane_id": "entry-1", "bay_id": "B-12", "plate": "AB123CD",
         "session_id": "s-1", "details": {"gapMs": 800}},
        {"kind": "overstay"},
    ),
    EventType.PAYMENT_RECORDED: (
        {"payment_id": "pay-9", "session_id": "s-1", "amount": EUR_250, "method": "card",
         "source": "pay_station", "valid_until": AT + timedelta(minutes=15),
         "device": "pay-lobby", "reference": "lobby-000123"},
        {"payment_id": "pay-9", "session_id": "s-1", "amount": EUR_250, "method": "app",
         "source": "backend"},
    ),
    EventType.COMMAND_EXECUTED: (
        {"command_id": "cmd-7", "command": "open_gate", "outcome": "rejected",
         "reason": "lane is in locked mode", "issued_by": "operator:alice",
         "details": {"laneId": "exit-1"}},
        {"command_id": "cmd-8", "command": "request_status", "outcome": "accepted"},
    ),
    EventType.CONFIG_APPLIED: (
        {"kind": "tariffs", "version": 12, "outcome": "rejected", "source": "mqtt",
         "errors": ["rate table 'night': band 22:00-06:00 overlaps 'evening'"]},
        {"kind": "permits", "version": 3, "outcome": "applied", "source": "local"},
    ),
    EventType.OCCUPANCY_HOURLY: (
        {"hour_start": AT, "hour_end": AT + timedelta(hours=1), "entries": 42, "exits": 37,
         "groups": [{"floor": "-1", "zone": "B", "bayType": "ev", "capacity": 8,
                     "occupiedAvg": 5.25, "occupiedMax": 8, "unknownMax": 1}]},
        {"hour_start": AT, "hour_end": AT + timedelta(hours=1), "entries": 0, "exits": 0,
         "groups": []},
    ),
    EventType.LEVEL_COUNTED: (
        {"level_id": "2", "zone": "roof", "count": 60, "previous_count": 60, "capacity": 60,
         "cause": "ramp", "ramp_id": "ramp-1-2", "clamped": True},
        {"level_id": "2", "zone": "2", "count": 12, "previous_count": 14, "capacity": 60,
         "cause": "recount"},
    ),
}


def builder(event_type: EventType) -> Callable[..., Event]:
    """The builder for a type, found by name: `session.started` -> `session_started`."""
    fn: Callable[..., Event] = getattr(events, event_type.value.replace(".", "_"))
    return fn


def build(event_type: EventType, kwargs: dict[str, Any]) -> Event:
    return builder(event_type)(at=AT, **kwargs)


def wire(event: Event, sequence: int = 1) -> dict[str, Any]:
    """The event as the backend receives it, parsed."""
    parsed: dict[str, Any] = json.loads(envelope_json(
        source=SOURCE, sequence=sequence, id=event.id, type=event.type.value, time=event.time,
        data_json=event.data_json))
    return parsed


def full_event(event_type: EventType) -> dict[str, Any]:
    return wire(build(event_type, EXAMPLES[event_type][0]))


def rejected(event: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_cloudevent(event)
    assert re.search(message, caught.value.message), caught.value.message


# --- every type has a builder, a schema, an example and a doc entry -----------------

@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_has_builder_schema_and_example(event_type: EventType) -> None:
    assert callable(getattr(events, event_type.value.replace(".", "_"), None)), "no builder"
    assert event_type.value in schemas(), f"no docs/schemas/{event_type.value}.json"
    assert event_type in EXAMPLES, "no example in this test"
    assert f"`{event_type.value}`" in DOCS.read_text(encoding="utf-8"), "not in docs/events.md"


def test_every_schema_file_is_an_event_type() -> None:
    assert sorted(event_type_names()) == sorted(t.value for t in EventType)
    assert set(SHARED) <= set(schemas())


def test_schema_ids_match_file_names() -> None:
    for name, schema in schemas().items():
        assert schema["$id"].endswith(f"/{name}.json")
        if name not in SHARED:
            assert schema["properties"]["type"] == {"const": EventType(name).cloudevents_type}


# --- builders emit what the schemas describe ----------------------------------------

@pytest.mark.parametrize("variant", ["full", "minimal"])
@pytest.mark.parametrize("event_type", list(EventType))
def test_builder_output_validates(event_type: EventType, variant: str) -> None:
    kwargs = EXAMPLES[event_type][0 if variant == "full" else 1]
    event = build(event_type, kwargs)
    assert event.type is event_type
    assert event.time == rfc3339(AT)
    validate_cloudevent(wire(event, sequence=42))


def _shape(schema: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """An (inlined) object schema's properties and required keys, through `allOf`."""
    props = dict(schema.get("properties", {}))
    required = set(schema.get("required", ()))
    for part in schema.get("allOf", ()):
        part_props, part_required = _shape(part)
        props = {**part_props, **props}
        required |= part_required
    return props, required


def _assert_keys(instance: Any, schema: dict[str, Any], *, every: bool, path: str) -> None:
    """Each object in `instance` has exactly the schema's properties (every=True) or
    exactly its required keys (every=False)."""
    props, required = _shape(schema)
    if isinstance(instance, dict) and props:
        expected = set(props) if every else required
        assert set(instance) == expected, f"{path}: {sorted(instance)} != {sorted(expected)}"
        for key, value in instance.items():
            _assert_keys(value, props[key], every=every, path=f"{path}.{key}")
    elif isinstance(instance, list):
        for i, item in enumerate(instance):
            _assert_keys(item, schema["items"], every=every, path=f"{path}[{i}]")


@pytest.mark.parametrize("event_type", list(EventType))
def test_builders_emit_exactly_the_schema_fields(event_type: EventType) -> None:
    """Full arguments reach every property; minimal ones emit only the required keys:
    so required/optional in the schema is what the builder does."""
    data_schema = inlined(event_type.value)["properties"]["data"]
    full, minimal = EXAMPLES[event_type]
    _assert_keys(build(event_type, full).data, data_schema, every=True, path="data")
    _assert_keys(build(event_type, minimal).data, data_schema, every=False, path="data")


def _enum_at(schema_name: str, pointer: str) -> set[str]:
    node: Any = schemas()[schema_name]
    for part in pointer.split("/"):
        node = node[part]
    return set(node["enum"])


_DATA = "properties/data/properties/"
_COMMON = "$defs/"


@pytest.mark.parametrize(("literal", "schema_name", "pointer"), [
    (events.CredentialType, "common", _COMMON + "credential/properties/type"),
    (events.TransactionType, "common", _COMMON + "financialTransaction/properties/type"),
    (events.RightKind, "common", _COMMON + "right/properties/kind"),
    (events.Severity, "common", _COMMON + "alarmData/properties/severity"),
    (events.ExitReason, "session.ended", _DATA + "exitReason"),
    (events.GateOpenReason, "gate.opened", _DATA + "reason"),
    (events.GateCloseReason, "gate.closed", _DATA + "reason"),
    (events.BayType, "bay.changed", _DATA + "bayType"),
    (events.BayState, "bay.changed", _DATA + "state"),
    (events.BayState, "bay.changed", _DATA + "previousState"),
    (events.BaySource, "bay.changed", _DATA + "source"),
    (events.ViolationKind, "violation.detected", _DATA + "kind"),
    (events.PaymentMethod, "payment.recorded", _DATA + "method"),
    (events.PaymentSource, "payment.recorded", _DATA + "source"),
    (events.CommandOutcome, "command.executed", _DATA + "outcome"),
    (events.ConfigKind, "config.applied", _DATA + "kind"),
    (events.ConfigOutcome, "config.applied", _DATA + "outcome"),
    (events.ConfigSource, "config.applied", _DATA + "source"),
    (events.LevelCountCause, "level.counted", _DATA + "cause"),
])
def test_literal_types_match_schema_enums(literal: Any, schema_name: str, pointer: str) -> None:
    assert set(get_args(literal)) == _enum_at(schema_name, pointer)


def test_session_ended_fee_is_the_sum_of_its_lines() -> None:
    fee = build(EventType.SESSION_ENDED, EXAMPLES[EventType.SESSION_ENDED][0]).data["fee"]
    assert fee["amountMinor"] == 500
    assert fee["currency"] == "EUR"
    assert [line["code"] for line in fee["lines"]] == ["hourly", "validation"]


def test_session_times_are_in_wire_format() -> None:
    data = build(EventType.SESSION_ENDED, EXAMPLES[EventType.SESSION_ENDED][0]).data
    assert data["actualStart"] == "2026-03-02T08:00:00.123456Z"
    assert data["actualEnd"] == "2026-03-02T10:05:00.123456Z"
    assert data["segments"][0] == {
        "actualStart": "2026-03-02T08:00:00.123456Z", "actualEnd": "2026-03-02T09:00:00.123456Z",
        "rateTableId": "standard", "amount": {"amountMinor": 250, "currency": "EUR"}}


# --- the schemas reject what a producer bug would emit --------------------------------

@pytest.mark.parametrize("event_type", list(EventType))
def test_missing_required_data_field_is_rejected(event_type: EventType) -> None:
    _, required = _shape(inlined(event_type.value)["properties"]["data"])
    event = full_event(event_type)
    for field in required:
        broken = json.loads(json.dumps(event))
        del broken["data"][field]
        rejected(broken, f"'{field}' is a required property")


@pytest.mark.parametrize("event_type", list(EventType))
def test_unknown_data_field_is_rejected(event_type: EventType) -> None:
    event = full_event(event_type)
    event["data"]["sessionID"] = "typo"
    rejected(event, r"'sessionID' was unexpected")


def test_unknown_field_in_a_nested_object_is_rejected() -> None:
    event = full_event(EventType.SESSION_ENDED)
    event["data"]["financialTransactions"][0]["amount"]["amount_minor"] = 250
    rejected(event, r"'amount_minor' was unexpected")


def test_unknown_envelope_attribute_is_rejected() -> None:
    event = full_event(EventType.GATE_OPENED)
    event["subject"] = "exit-1"
    rejected(event, r"'subject' was unexpected")


@pytest.mark.parametrize("amount", [2.5, 250.0, "250", True])
def test_money_must_be_an_integer(amount: object) -> None:
    event = full_event(EventType.PAYMENT_RECORDED)
    event["data"]["amount"]["amountMinor"] = amount
    rejected(event, r"is not of type 'integer'")


def test_fee_and_duration_must_be_integers() -> None:
    event = full_event(EventType.SESSION_ENDED)
    event["data"]["fee"]["amountMinor"] = 5.0
    rejected(event, r"is not of type 'integer'")
    event = full_event(EventType.SESSION_ENDED)
    event["data"]["durationSeconds"] = 7500.5
    rejected(event, r"is not of type 'integer'")


def test_currency_must_be_an_iso_code() -> None:
    event = full_event(EventType.PAYMENT_RECORDED)
    event["data"]["amount"]["currency"] = "eur"
    rejected(event, r"does not match")


def test_data_of_another_type_is_rejected() -> None:
    event = full_event(EventType.SESSION_STARTED)
    event["type"] = EventType.SESSION_ENDED.cloudevents_type
    rejected(event, r"is a required property")


def test_closing_reason_on_gate_opened_is_rejected() -> None:
    event = full_event(EventType.GATE_OPENED)
    event["data"]["reason"] = "vehicle_passed"
    rejected(event, r"is not one of")


def test_gate_moved_by_command_needs_the_command_id() -> None:
    event = full_event(EventType.GATE_OPENED)
    del event["data"]["commandId"]
    rejected(event, r"'commandId' is a required property")


def test_ended_session_cannot_have_an_open_segment() -> None:
    event = full_event(EventType.SESSION_ENDED)
    del event["data"]["segments"][0]["actualEnd"]
    rejected(event, r"'actualEnd' is a required property")


def test_config_errors_agree_with_outcome() -> None:
    applied_with_errors = full_event(EventType.CONFIG_APPLIED)
    applied_with_errors["data"]["outcome"] = "applied"
    rejected(applied_with_errors, r"is expected to be empty|should be non-empty|too long")
    rejected_without_errors = full_event(EventType.CONFIG_APPLIED)
    rejected_without_errors["data"]["errors"] = []
    rejected(rejected_without_errors, r"should be non-empty|too short")


@pytest.mark.parametrize(("attribute", "value", "message"), [
    ("seq", 0, r"less than the minimum"),
    ("seq", "1", r"is not of type 'integer'"),
    ("specversion", "0.3", r"was expected"),
    ("id", str(uuid.uuid4()), r"does not match"),
    ("source", "urn:parking:lot:7:gw-1", r"does not match"),
    ("time", "2026-03-02 08:00:00Z", r"does not match"),  # RFC 3339's grammar wants the T
    ("time", "2026-03-02T08:00:00", r"does not match"),  # no offset: no instant
    ("time", "2026-03-02T08:00:00.Z", r"does not match"),
    ("time", "2026-03-02T24:00:00Z", r"does not match"),
    ("time", "2026-03-02T08:00:00+0100", r"does not match"),
    ("datacontenttype", "text/json", r"was expected"),
])
def test_malformed_envelope_is_rejected(attribute: str, value: object, message: str) -> None:
    event = full_event(EventType.BAY_CHANGED)
    event[attribute] = value
    rejected(event, message)


@pytest.mark.parametrize("stamp", [
    "2026-03-02T08:00:00Z",  # no fraction
    "2026-03-02T08:00:00.1Z",
    "2026-03-02T08:00:00.123456789Z",  # nanoseconds, as Go and Java write them
    "2026-03-02T09:00:00.123+01:00",
    "2026-03-02T03:30:00-04:30",
    "2026-03-02t08:00:00z",  # RFC 3339 lets T and Z be lower case
    "2016-12-31T23:59:60Z",  # a leap second
])
def test_any_rfc3339_time_is_accepted(stamp: str) -> None:
    """The gateway writes UTC with microseconds, but the schemas are a contract for every
    producer and consumer: any RFC 3339 date-time is a time (issue 18, item 6)."""
    event = full_event(EventType.SESSION_STARTED)
    event["time"] = stamp
    event["data"]["actualStart"] = stamp
    validate_cloudevent(event)


def test_unknown_event_type_is_rejected() -> None:
    event = full_event(EventType.GATE_OPENED)
    event["type"] = "org.parking.v1.gate.exploded"
    rejected(event, r"no schema for event type 'org.parking.v1.gate.exploded'")
    event["type"] = "org.parking.v1.common"  # a shared schema file, not an event type
    rejected(event, r"does not match")
    event["type"] = "com.example.gate.opened"
    rejected(event, r"does not match")


# --- the envelope core --------------------------------------------------------------

def test_envelope_json_is_the_cloudevent() -> None:
    event = make_event(EventType.GATE_CLOSED, {"laneId": "entry-1", "gateId": "barrier-1",
                                                "reason": "timeout", "note": "ü"}, AT)
    text = envelope_json(source=SOURCE, sequence=7, id=event.id, type=event.type.value,
                         time=event.time, data_json=event.data_json)
    assert json.loads(text) == {
        "specversion": "1.0",
        "id": event.id,
        "source": "urn:parking:lot-7:gw-1",
        "type": "org.parking.v1.gate.closed",
        "time": "2026-03-02T08:00:00.123456Z",
        "datacontenttype": "application/json",
        "seq": 7,
        "data": {"laneId": "entry-1", "gateId": "barrier-1", "reason": "timeout", "note": "ü"},
    }


def test_the_sequence_number_is_our_own_integer_extension_seq() -> None:
    """CloudEvents registers `sequence` as a String extension; ours is an Integer, so it has a
    name of its own (issue 18, item 6), and the registered name is not sent."""
    event = full_event(EventType.BAY_CHANGED)
    assert isinstance(event["seq"], int)
    assert "sequence" not in event
    event["sequence"] = "00000000000000000001"
    rejected(event, r"Additional properties are not allowed \('sequence' was unexpected\)")


def test_data_is_serialised_compactly_with_sorted_keys() -> None:
    event = make_event(EventType.CONFIG_APPLIED, {"b": 1, "a": [1, 2]}, AT)
    assert event.data_json == '{"a":[1,2],"b":1}'
    assert event.data == {"a": [1, 2], "b": 1}


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        make_event(EventType.ALARM_RAISED, {"details": {"level": math.nan}}, AT)


def test_source_format() -> None:
    assert SOURCE == "urn:parking:lot-7:gw-1"
    validate_cloudevent(full_event(EventType.BAY_CHANGED))  # the schema accepts it


def test_rfc3339_is_utc_with_microseconds() -> None:
    assert rfc3339(datetime(2026, 3, 2, 8, 0, tzinfo=UTC)) == "2026-03-02T08:00:00.000000Z"
    plus_two = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 3, 2, 10, 0, 0, 5, tzinfo=plus_two)) == \
        "2026-03-02T08:00:00.000005Z"


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: Python counts such a datetime as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize("naive", [datetime(2026, 3, 2, 8, 0),
                                   datetime(2026, 3, 2, 8, 0, tzinfo=_NoOffset())])
def test_rfc3339_refuses_naive_datetimes(naive: datetime) -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        rfc3339(naive)
    with pytest.raises(ValueError, match="tz-aware"):
        events.gate_opened(at=naive, lane_id="entry-1", gate_id="barrier-1", reason="manual")


# --- uuid7 ------------------------------------------------------------------------

def test_uuid7_version_variant_and_timestamp() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(uuid7())
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after + 1  # +1: a busy millisecond may borrow the next


def test_uuid7_is_monotonic_in_a_tight_loop() -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert all(a < b for a, b in pairwise(ids))
    now_ms = time.time_ns() // 1_000_000
    assert abs((uuid.UUID(ids[-1]).int >> 80) - now_ms) < 1_000
    assert {uuid.UUID(i).version for i in ids} == {7}


@pytest.fixture
def frozen_ms(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Pin the clock uuid7 reads to a given millisecond; its state is restored afterwards."""
    monkeypatch.setattr(events, "_last_uuid7_ms", events._last_uuid7_ms)
    monkeypatch.setattr(events, "_last_uuid7_seq", events._last_uuid7_seq)

    def pin(ms: int) -> None:
        monkeypatch.setattr(events, "time", SimpleNamespace(time_ns=lambda: ms * 1_000_000))

    return pin


def test_uuid7_counter_overflow_borrows_the_next_millisecond(
        frozen_ms: Callable[[int], None]) -> None:
    ms = time.time_ns() // 1_000_000 + 10_000
    frozen_ms(ms)
    ids = [uuid7() for _ in range(5_000)]  # more than the 12-bit counter holds in one ms
    assert all(a < b for a, b in pairwise(ids))
    stamps = {uuid.UUID(i).int >> 80 for i in ids}
    assert min(stamps) == ms
    assert ms + 1 in stamps
    assert max(stamps) <= ms + 2


def test_uuid7_stays_ordered_when_the_wall_clock_steps_back(
        frozen_ms: Callable[[int], None]) -> None:
    ms = time.time_ns() // 1_000_000 + 10_000
    frozen_ms(ms)
    first = uuid7()
    frozen_ms(ms - 60_000)  # NTP steps the clock back a minute
    second = uuid7()
    assert first < second
    assert uuid.UUID(second).int >> 80 == ms


# --- docs ---------------------------------------------------------------------------

def test_docs_examples_validate() -> None:
    """Also as a consumer would check them: the published files, `$ref`s resolved through
    a registry, with no help from tests/schemas.py."""
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    examples = [json.loads(b) for b in blocks]
    cloudevents = [e for e in examples if "specversion" in e]
    for example in cloudevents:
        validate_cloudevent(example)
        name = example["type"].removeprefix(events.TYPE_PREFIX)
        Draft202012Validator(schemas()[name], registry=registry()).validate(example)
    documented = {e["type"] for e in cloudevents}
    assert documented == {t.cloudevents_type for t in EventType}
