"""What one server allows: upload limits and who may write."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: Most hits one search may ask for.
MAX_K = 1000
#: Most files and text fields one multipart form may hold (parsing stops past them: 400).
MAX_FORM_FILES = 64
MAX_FORM_FIELDS = 16


@dataclass
class ServeSettings:
    """Limits and access rules of one server.

    Attributes:
        host: the address the server is bound to (decides whether writes may go without a token).
        token: bearer token required by write endpoints (``None``: no token).
        allow_writes: enable writes without a token (only honoured on a loopback ``host``).
        max_upload_bytes: largest request body accepted (413 above it).
        max_pixels: largest image (width × height) decoded (400 above it).
    """

    host: str = "127.0.0.1"
    token: str | None = None
    allow_writes: bool = False
    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000

    @property
    def writes(self) -> str:
        """``"token"``, ``"open"`` (loopback, enabled) or ``"disabled"``."""
        if self.token:
            return "token"
        return "open" if self.allow_writes and is_loopback(self.host) else "disabled"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
