"""Simulated parking lot: physics, sensor nodes on a pty bus, mock GPIO, cameras, traffic."""
