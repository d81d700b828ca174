"""The MQTT topic tree of one gateway, `<prefix>/<lot>/<gateway>/...` (docs/asyncapi.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass

CONFIG_KINDS = ("tariffs", "permits", "reservations", "deny_list", "permit_pools",
                "recurring_reservations")


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str  # e.g. "parking/v1"
    lot_id: str
    gateway_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.lot_id}/{self.gateway_id}"

    @property
    def events(self) -> str:
        """CloudEvents, QoS 1, in sequence order."""
        return f"{self.base}/events"

    @property
    def presence(self) -> str:
        """`online` / `offline`, retained; `offline` is also the last will."""
        return f"{self.base}/presence"

    def state(self, name: str) -> str:
        """Retained state documents: occupancy, lanes, health."""
        return f"{self.base}/state/{name}"

    def config(self, kind: str) -> str:
        """Retained config pushed by the backend."""
        return f"{self.base}/config/{kind}"

    @property
    def config_filter(self) -> str:
        return f"{self.base}/config/+"

    @property
    def commands(self) -> str:
        return f"{self.base}/commands"

    @property
    def replies(self) -> str:
        """Where command replies go unless the command names a topic under it."""
        return f"{self.base}/replies"

    def config_kind(self, topic: str) -> str | None:
        """The config kind a topic carries, or None if it is not a config topic of ours."""
        head = f"{self.base}/config/"
        return topic[len(head):] if topic.startswith(head) else None


def check_reply_to(replies: str, topic: str) -> None:
    """Raise ValueError (saying why) unless `topic` is `replies` or a topic below it.

    The topic comes from the backend, so it must be one a publish can carry: a wildcard
    makes paho raise, a NUL makes it send a packet the broker drops the link for, and a
    plain prefix test would let `.../repliesX/...` through.
    """
    if topic != replies and not topic.startswith(replies + "/"):
        raise ValueError(f"replyTo must be {replies} or a topic under it")
    if _BAD_TOPIC_CHARS.search(topic):
        raise ValueError("replyTo holds a wildcard (+ or #) or a control character")
    if "" in topic[len(replies):].split("/")[1:]:
        raise ValueError("replyTo has an empty topic level")


# Not in a topic we publish to: MQTT's wildcards, NUL and the other control characters
# (MQTT 3.1.1 section 1.5.3). A lone surrogate never gets here: the JSON parser refuses it.
_BAD_TOPIC_CHARS = re.compile("[+#\x00-\x1f\x7f-\x9f]")
