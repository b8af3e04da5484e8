"""Who is calling: the one client identity that jobs belong to and rate limits count against.

Three ways a call gets its identity, strongest first:
- ``TRUST_CLIENT_ID_HEADER=true`` (only behind an edge such as Envoy that checks the API key, drops any
  ``x-dqd-client-id`` the caller sent and sets its own): the header's value;
- dqd checks API keys itself (``API_KEY_REQUIRED``): the key's name in ``API_KEYS_FILE``;
- neither: ``anonymous`` — one tenant, every caller shares its jobs.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from .auth import API_KEY_HEADER, load_keys

CLIENT_ID_HEADER = "x-dqd-client-id"
ANONYMOUS = "anonymous"
MAX_IDENTITY_CHARS = 128

Metadata = Iterable[tuple[str, str | bytes]]


class IdentityResolver:
    """Maps a call's metadata to its client identity; cheap (one SHA-256 at most), safe to share."""

    def __init__(self, names_by_digest: Mapping[bytes, str] | None = None, *, trust_header: bool = False) -> None:
        self._names = dict(names_by_digest or {})
        self._trust_header = trust_header

    @classmethod
    def from_settings(cls, settings: object) -> "IdentityResolver":
        """The resolver a server with these settings uses (keys read from API_KEYS_FILE when required)."""
        keys_file = getattr(settings, "api_keys_file", "")
        names = load_keys(Path(keys_file)) if getattr(settings, "api_key_required", False) and keys_file else {}
        return cls(names, trust_header=bool(getattr(settings, "trust_client_id_header", False)))

    def identity(self, metadata: Metadata | None) -> str:
        """The caller's identity; ``anonymous`` when nothing identifies it."""
        values = {k: v for k, v in metadata or () if isinstance(v, str)}
        if self._trust_header and values.get(CLIENT_ID_HEADER, "").strip():
            return values[CLIENT_ID_HEADER].strip()[:MAX_IDENTITY_CHARS]
        key = values.get(API_KEY_HEADER)
        if key and self._names:
            name = self._names.get(hashlib.sha256(key.encode()).digest())
            if name:
                return name
        return ANONYMOUS
