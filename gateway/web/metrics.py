"""/metrics: the daemon's figures in Prometheus's text format (prometheus-client).

Most figures are read when scraped, from what the lot reports anyway (its `status`, the plate
reader's stats, the availability); the histograms are fed as the daemon measures:

- `parking_gate_open_latency_seconds{lane}`: the arming loop's edge to the barrier's raise
  commanded, for a decision that opens (the lane's `open_latencies_ms`);
- `parking_bay_commit_latency_seconds`: a bay reading, from its arrival to its change
  committed to the journal, fsync included (the occupancy's `journal_latencies_ms`); the
  journal's own commits are not timed.

The plate reader times each frame but keeps only its p50 and p95, so plate-read latency is
those two gauges, not a histogram; the sensor bus keeps only its last cycle's time, a gauge.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.core.availability import Availability, Counts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GATE_OPEN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SEVERITIES = ("info", "warning", "critical")
BUS_ERRORS = ("timeouts", "crc_errors", "exceptions", "io_errors")
READER_RESULTS = {"frames_read": "read", "reader_errors": "error", "bad_frames": "bad_frame"}
READER_COUNTS = ("requests", "timeouts", "drops", "restarts", "crashes", "hangs")


class Observed(deque[float]):
    """A latency series in milliseconds, as the daemon keeps it, that also feeds each value to
    a histogram in seconds. It takes the place of the series it is made from."""

    def __init__(self, series: deque[float], histogram: Histogram) -> None:
        super().__init__(series, maxlen=series.maxlen)
        self._histogram = histogram

    def append(self, ms: float) -> None:
        super().append(ms)
        self._histogram.observe(ms / 1000.0)

    def extend(self, values: Iterable[float]) -> None:
        for ms in values:
            self.append(ms)


class Snapshot:
    """What one scrape shows: the lot's status, the reader's stats, the availability."""

    def __init__(self, status: Mapping[str, Any], reader: Mapping[str, Any] | None,
                 availability: Availability | None) -> None:
        self.status = status
        self.reader = reader
        self.availability = availability


class Metrics(Collector):
    """The registry /metrics renders; collects the lot's figures of the scrape under way."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._gate_open = Histogram(
            "parking_gate_open_latency_seconds",
            "Arming loop to barrier raise commanded, for a decision that opens.", ["lane"],
            buckets=GATE_OPEN_BUCKETS, registry=self.registry)
        self._commit = Histogram(
            "parking_bay_commit_latency_seconds",
            "A bay reading's arrival to its change committed to the journal.",
            buckets=COMMIT_BUCKETS, registry=self.registry)
        ProcessCollector(registry=self.registry)  # memory, CPU, open files of the daemon
        self._snapshot: Snapshot | None = None
        self.registry.register(self)

    def gate_open(self, lane_id: str, series: deque[float]) -> Observed:
        """The lane's open latencies, observed: put it in the series' place."""
        return Observed(series, self._gate_open.labels(lane=lane_id))

    def bay_commit(self, series: deque[float]) -> Observed:
        return Observed(series, self._commit)

    def render(self, snapshot: Snapshot) -> bytes:
        """The exposition text, with `snapshot`'s figures (no await in between: one scrape's
        snapshot is never read by another)."""
        self._snapshot = snapshot
        try:
            return generate_latest(self.registry)
        finally:
            self._snapshot = None

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        if snapshot is None:
            return
        status = snapshot.status
        health = status.get("health") or {}
        yield from _sync(status.get("sync") or {})
        yield from _lanes(status.get("lanes") or [])
        yield from _alarms(status.get("alarms") or [])
        yield from _parts(health.get("parts") or {})
        if health.get("bus") is not None:
            yield from _bus(health["bus"])
        if snapshot.reader is not None:
            yield from _reader(snapshot.reader)
        if snapshot.availability is not None:
            yield from _bays(snapshot.availability)
        if status.get("pay") is not None:
            yield from _pay(status["pay"])



def _sync(sync: Mapping[str, Any]) -> Iterator[Metric]:
    if "last_seq" in sync:
        yield CounterMetricFamily("parking_journal_events", "Events journaled, ever (the"
                                  " sequence's high-water mark).", value=sync["last_seq"])
    yield GaugeMetricFamily("parking_sync_backlog_events",
                            "Events journaled, not yet acknowledged by the backend.",
                            value=sync.get("backlog", 0))
    yield GaugeMetricFamily("parking_sync_lag_seconds",
                            "Age of the oldest unacknowledged event; 0 when none waits.",
                            value=sync.get("lag_s") or 0.0)
    yield GaugeMetricFamily("parking_sync_connected", "1 while the backend link is up.",
                            value=1.0 if sync.get("connected") else 0.0)
    for key, help_text in (("published", "Events published since start, resent ones too."),
                           ("acked", "Events the backend acknowledged since start."),
                           ("reconnects", "Reconnects to the backend since start.")):
        if key in sync:
            yield CounterMetricFamily(f"parking_sync_{key}", help_text, value=sync[key])


def _pay(pay: Mapping[str, Any]) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "parking_pay_payments", "Pay stations' payments since start: recorded, replayed (the"
        " same reference again) and refused (by the refusal's code).", labels=["outcome", "code"])
    family.add_metric(["recorded", ""], pay.get("recorded", 0))
    family.add_metric(["replayed", ""], pay.get("replayed", 0))
    for code, n in (pay.get("refused") or {}).items():
        family.add_metric(["refused", code], n)
    yield family


def _lanes(lanes: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    decisions = CounterMetricFamily("parking_lane_decisions",
                                    "Lane outcomes since start: vehicles passed, refused,"
                                    " tailgating.", labels=["lane", "outcome"])
    out_of_order = GaugeMetricFamily("parking_lane_out_of_order",
                                     "1 while the lane is out of order.", labels=["lane"])
    for lane in lanes:
        for key, outcome in (("passages", "passed"), ("refusals", "refused"),
                             ("tailgates", "tailgate")):
            decisions.add_metric([lane["laneId"], outcome], lane.get(key, 0))
        out_of_order.add_metric([lane["laneId"]], 1.0 if lane.get("outOfOrder") else 0.0)
    yield decisions
    yield out_of_order


def _alarms(alarms: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    family = GaugeMetricFamily("parking_alarms_active", "Active alarms by severity.",
                               labels=["severity"])
    counts = dict.fromkeys(SEVERITIES, 0)
    for alarm in alarms:
        severity = str(alarm.get("severity"))
        counts[severity] = counts.get(severity, 0) + 1
    for severity, n in counts.items():
        family.add_metric([severity], n)
    yield family


def _parts(parts: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    family = CounterMetricFamily("parking_part_restarts", "Restarts of each supervised part.",
                                 labels=["part"])
    for name, part in parts.items():
        family.add_metric([name], part.get("restarts", 0))
    yield family


def _bus(bus: Mapping[str, Any]) -> Iterator[Metric]:
    yield CounterMetricFamily("parking_bus_cycles", "Polling cycles of the sensor bus.",
                              value=bus.get("cycles", 0))
    if bus.get("last_cycle_ms") is not None:
        yield GaugeMetricFamily("parking_bus_cycle_seconds", "The last polling cycle's time.",
                                value=bus["last_cycle_ms"] / 1000.0)
    yield GaugeMetricFamily("parking_bus_nodes_faulty", "Detector nodes not answering.",
                            value=bus.get("nodes_faulty", 0))
    errors = CounterMetricFamily("parking_bus_node_errors",
                                 "Failed exchanges with each detector node, by kind.",
                                 labels=["unit", "bay", "kind"])
    for node in bus.get("nodes", ()):
        counters = node.get("counters", {})
        for kind in BUS_ERRORS:
            errors.add_metric([str(node["unit_id"]), node["bay_id"], kind],
                              counters.get(kind, 0))
    yield errors


def _reader(reader: Mapping[str, Any]) -> Iterator[Metric]:
    frames = CounterMetricFamily("parking_plate_reader_frames", "Frames the plate reader"
                                 " handled, by result.", labels=["result"])
    for key, result in READER_RESULTS.items():
        frames.add_metric([result], reader.get(key, 0))
    yield frames
    for key in READER_COUNTS:
        yield CounterMetricFamily(f"parking_plate_reader_{key}",
                                  f"The plate reader's {key} since start.",
                                  value=reader.get(key, 0))
    latency = GaugeMetricFamily("parking_plate_read_latency_seconds",
                                "Per-frame read time (send to answer), recent quantiles.",
                                labels=["quantile"])
    for key, quantile in (("p50_ms", "0.5"), ("p95_ms", "0.95")):
        if reader.get(key) is not None:
            latency.add_metric([quantile], reader[key] / 1000.0)
    yield latency


def _bays(availability: Availability) -> Iterator[Metric]:
    lot = sum(availability.cells.values(), Counts())
    family = GaugeMetricFamily("parking_bays", "The lot's bays by state.", labels=["state"])
    for state, n in (("free", lot.free), ("occupied", lot.occupied), ("unknown", lot.unknown),
                     ("out_of_service", lot.out_of_service)):
        family.add_metric([state], n)
    yield family
