"""Sync with the central backend: outbox drain over MQTT (or HTTP), inbound config, commands.

The daemon builds one `Sync(settings, journal, clock, control)` and runs `await sync.run()`.
"""

from gateway.sync.drain import SyncStats
from gateway.sync.service import Sync, SyncConfigError

__all__ = ["Sync", "SyncConfigError", "SyncStats"]
