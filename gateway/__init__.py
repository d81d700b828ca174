"""Parking-lot edge gateway: the daemon that runs a lot's lanes, bays and journal."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("parking-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
