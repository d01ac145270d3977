"""Hear token revocations at once: each web process LISTENs on the channel revoke_token NOTIFYs
in its own transaction, and every notification retires what that process's token cache holds.

The cache may only be trusted while this is known to work. Each (re)connection, each
notification and each loss bumps a generation; the cache keeps an entry only with the
generation it was looked up under and serves it only while that generation is current and the
listener is delivering. So a revocation during a gap (PostgreSQL restarting, a network cut, a
pooler that swallows notifications) is never missed: in a gap every request asks the database.
"""

from __future__ import annotations

import threading

from ai_service.listen import ChannelListener
from ai_service.notifications import TOKENS_CHANNEL


class RevocationListener(ChannelListener):
    channel = TOKENS_CHANNEL
    application_name = "ai-service-web-revocations"
    listening_note = "listening for token revocations"
    # Trusting the cache without delivery would keep revoked tokens working.
    fallback = "tokens are looked up on every request"

    def __init__(self, conninfo: str) -> None:
        super().__init__(conninfo, name="revocations")
        self._lock = threading.Lock()
        self._generation = 0
        self._trusted = False

    def trusted_generation(self) -> int | None:
        """The current generation while notifications are being delivered; None in a gap."""
        with self._lock:
            return self._generation if self._trusted else None

    def on_listening(self) -> None:
        self._advance(trusted=True)

    def on_notification(self, payload: str) -> None:
        self._advance(trusted=True)

    def on_lost(self) -> None:
        self._advance(trusted=False)

    def _advance(self, trusted: bool) -> None:
        with self._lock:
            self._generation += 1
            self._trusted = trusted
