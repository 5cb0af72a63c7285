"""What the heartbeat reports: `HeartbeatEvent`, given to ``on_heartbeat_failure``.

The heartbeat itself (extends on the protocol's schedule) is internal, in ``runcycles._heartbeat``.
"""

from __future__ import annotations

import attrs

from ._protocol.states import HeartbeatDisposition

__all__ = ["HeartbeatDisposition", "HeartbeatEvent"]


@attrs.frozen(kw_only=True)
class HeartbeatEvent:
    """A heartbeat failure, as given to ``on_heartbeat_failure``.

    ``disposition`` is ``"retrying"`` (the same key will be retried after ``retry_in_ms``) or ``"stopped"``
    (no more extends for this reservation; the guarded work goes on and is still settled): a
    `HeartbeatDisposition`, a str enum, so ``event.disposition == "retrying"`` holds.
    """

    reservation_id: str
    disposition: HeartbeatDisposition = attrs.field(converter=HeartbeatDisposition)
    reason: str
    status: int | None = None
    error_code: str | None = None
    retry_in_ms: int | None = None
