"""/metrics: the lot's figures as Prometheus reads them, and latency histograms fed as the
daemon measures."""

from __future__ import annotations

from collections import deque

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.metrics import Metrics, Snapshot
from gateway.web.server import WebServer
from tests.web.conftest import FakeLot, bearer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_lot_s_figures_are_scraped(server: WebServer,
                                             client: aiohttp.ClientSession) -> None:
    server.metrics.gate_open("entry", deque(maxlen=10)).append(250.0)
    async with client.get("/metrics", headers=bearer("tech")) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        got = samples(await response.text())
    expected = {
        ("parking_journal_events_total", ()): 42,
        ("parking_sync_backlog_events", ()): 5,
        ("parking_sync_lag_seconds", ()): 2.5,
        ("parking_sync_connected", ()): 1,
        ("parking_sync_acked_total", ()): 37,
        ("parking_lane_decisions_total", (("lane", "entry"), ("outcome", "passed"))): 4,
        ("parking_lane_decisions_total", (("lane", "entry"), ("outcome", "refused"))): 1,
        ("parking_lane_decisions_total", (("lane", "exit"), ("outcome", "tailgate"))): 1,
        ("parking_lane_out_of_order", (("lane", "exit"),)): 1,
        ("parking_alarms_active", (("severity", "critical"),)): 1,
        ("parking_alarms_active", (("severity", "warning"),)): 0,
        ("parking_part_restarts_total", (("part", "lane:entry"),)): 2,
        ("parking_bus_cycles_total", ()): 100,
        ("parking_bus_cycle_seconds", ()): 0.25,
        ("parking_bus_nodes_faulty", ()): 1,
        ("parking_bus_node_errors_total",
         (("bay", "A-01"), ("kind", "timeouts"), ("unit", "1"))): 3,
        ("parking_plate_reader_frames_total", (("result", "read"),)): 10,
        ("parking_plate_reader_frames_total", (("result", "bad_frame"),)): 2,
        ("parking_plate_read_latency_seconds", (("quantile", "0.95"),)): 0.16,
        ("parking_bays", (("state", "free"),)): 4,
        ("parking_bays", (("state", "out_of_service"),)): 1,
        ("parking_gate_open_latency_seconds_count", (("lane", "entry"),)): 1,
        ("parking_gate_open_latency_seconds_bucket", (("lane", "entry"), ("le", "0.3"))): 1,
        ("parking_gate_open_latency_seconds_bucket", (("lane", "entry"), ("le", "0.2"))): 0,
        ("parking_pay_payments_total", (("code", ""), ("outcome", "recorded"))): 7,
        ("parking_pay_payments_total", (("code", ""), ("outcome", "replayed"))): 1,
        ("parking_pay_payments_total", (("code", "amount_mismatch"), ("outcome", "refused"))): 2,
    }
    assert {key: got.get(key) for key in expected} == expected
    if _stat_rss_pages() > 0:  # qemu-user's /proc/self/stat says 0 (the arm64 run)
        assert got[("process_resident_memory_bytes", ())] > 10e6
    assert ("process_cpu_seconds_total", ()) in got


def _stat_rss_pages() -> int:
    """The resident pages /proc/self/stat gives, where prometheus-client reads them."""
    with open("/proc/self/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[21])


def test_an_observed_series_stays_the_series_and_feeds_the_histogram() -> None:
    metrics = Metrics()
    series: deque[float] = deque([1.0, 2.0], maxlen=3)
    observed = metrics.bay_commit(series)
    observed.extend(x for x in (3.0, 40.0))  # a generator, as the occupancy hands it
    observed.append(600.0)
    assert (list(observed), observed.maxlen) == ([3.0, 40.0, 600.0], 3)
    got = samples(metrics.render(Snapshot({}, None, None)).decode())
    assert got[("parking_bay_commit_latency_seconds_count", ())] == 3  # the new ones only
    assert got[("parking_bay_commit_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("parking_bay_commit_latency_seconds_bucket", (("le", "0.5"),))] == 2
    assert got[("parking_bay_commit_latency_seconds_sum", ())] == 0.643


def test_a_lot_without_reader_or_bus_leaves_their_figures_out() -> None:
    text = Metrics().render(Snapshot({"sync": {"backlog": 0}, "health": {"bus": None}},
                                     None, FakeLot().availability())).decode()
    assert "parking_bus_" not in text
    assert "parking_plate_" not in text
    assert "parking_journal_events" not in text  # not known without the sync's figures
    assert "parking_bays" in text
