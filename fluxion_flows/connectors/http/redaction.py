"""Keeping secret URLs out of httpx's own log lines.

An endpoint given as a secret (``secret://...``; e.g. a webhook URL whose
path is the credential) must be revealed to send the request, and httpx logs
every request URL at INFO on the ``httpx`` logger. A filter on that logger
replaces the registered secret texts with ``***`` in those records, so
turning on INFO logging cannot leak them. Only texts registered here are
touched; every other record passes unchanged.
"""

from __future__ import annotations

import logging
import threading

MASK = "***"


class _SecretTextFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        with self._lock:
            self.secrets.add(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in sorted(self.secrets, key=len, reverse=True):
                message = message.replace(secret, MASK)
            record.msg, record.args = message, None
        return True


_filter = _SecretTextFilter()
_installed = False
_install_lock = threading.Lock()


def protect(text: str) -> None:
    """Never let ``text`` appear in an httpx log record (registers it for the process)."""
    global _installed
    if not text:
        return
    with _install_lock:
        if not _installed:
            logging.getLogger("httpx").addFilter(_filter)
            _installed = True
    _filter.add(text)
