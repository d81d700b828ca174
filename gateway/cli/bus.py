"""`parking-gateway bench bus`: the poll cycle over the simulated RS-485 bus against its limit."""

from __future__ import annotations

import click

from gateway.bench.bus import DEFAULT_TURNAROUND_S, SimulatorMissing, bus_bench
from gateway.cli import EXIT_CODES, OperationalError, Section, _print_json, _print_sections

BAUDRATES = ("9600", "19200", "38400", "57600", "115200")


@click.command("bus", epilog=EXIT_CODES)
@click.option("--nodes", type=click.IntRange(1, 247), default=32, show_default=True,
              help="Detector nodes on the bus (unit ids 1..N).")
@click.option("--baud", type=click.Choice(BAUDRATES), default="19200", show_default=True,
              help="Line speed.")
@click.option("--parity", type=click.Choice(["E", "O", "N"]), default="E", show_default=True)
@click.option("--cycles", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Poll cycles measured (the median is reported).")
@click.option("--link", type=click.Choice(["pty", "socket"]), default="pty", show_default=True,
              help="The simulated line: a pty (as a serial port), or a socket pair (no kernel "
                   "tty worker in the way).")
@click.option("--turnaround-ms", type=click.FloatRange(0, 100), default=DEFAULT_TURNAROUND_S * 1000,
              show_default=True, help="Each simulated node's time to start its reply.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON on stdout, and nothing else there.")
def bench_bus(nodes: int, baud: str, parity: str, cycles: int, link: str,
              turnaround_ms: float, as_json: bool) -> None:
    """Poll simulated detector nodes over a pty; compare the cycle with the wire's limit."""
    try:
        result = bus_bench(nodes=nodes, baudrate=int(baud), parity=parity, cycles=cycles,
                           turnaround_s=turnaround_ms / 1000,
                           link="socket" if link == "socket" else "pty")
    except (SimulatorMissing, OSError) as e:
        raise OperationalError(f"benchmark failed: {e}") from None
    if as_json:
        _print_json(result)
        return
    rows = [
        ("nodes", str(result["nodes"])),
        ("line", f"{result['baud']} baud, 8{result['parity']}1 over a {result['link']}"),
        ("poll cycle (median)", f"{result['cycle_ms']:.2f} ms"),
        ("poll cycle (min - max)",
         f"{result['cycle_ms_min']:.2f} - {result['cycle_ms_max']:.2f} ms"),
        ("physical bus limit", f"{result['bus_limit_ms']:.2f} ms"),
        ("ratio", f"{result['ratio']:.3f}x"),
        ("failed transactions", str(result["failed_transactions"])),
    ]
    _print_sections([Section("sensor bus bench", rows, right_last=True)])


# Declared, not inferred: gateway.cli imports this module at its end, and the import cycle would
# leave the decorated function's type undetermined where gateway.cli registers it.
bus: click.Command = bench_bus
