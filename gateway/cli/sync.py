"""The sync side's CLI: `parking-gateway bench sync`.

Click only at import: the benchmark (MQTT, a broker) loads when the command runs,
so the technician's CLI starts as fast as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path

import click


@click.command("sync")
@click.option("--events", "events_count", type=click.IntRange(1), default=100_000,
              show_default=True, help="Size of the backlog to drain.")
@click.option("--latency-events", type=click.IntRange(10), default=1000, show_default=True,
              help="Events committed one at a time online, for the latency figures.")
@click.option("--events-per-message", type=click.IntRange(1, 1000), default=100,
              show_default=True, help="Backlog events packed per MQTT message (1: one each).")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Scratch folder (default: a temporary one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def bench_sync(events_count: int, latency_events: int, events_per_message: int,
               directory: Path | None, as_json: bool) -> None:
    """Drain rate of a QoS 1 backlog, and commit-to-receipt latency, on a local mosquitto."""
    with (contextlib.nullcontext(str(directory)) if directory is not None
          else tempfile.TemporaryDirectory(prefix="parking-gateway-bench-sync-")) as path:
        Path(path).mkdir(parents=True, exist_ok=True)
        from gateway.bench.sync import sync_bench
        from gateway.sync.mqtt import MqttError

        try:
            result = asyncio.run(sync_bench(Path(path), events_count=events_count,
                                            latency_events=latency_events,
                                            events_per_message=events_per_message))
        except (OSError, RuntimeError, MqttError) as e:
            raise click.ClickException(f"benchmark failed: {e}") from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:>20}  {value}")
