"""The client identity: key name, trusted edge header, or anonymous."""
from __future__ import annotations

from pathlib import Path

import pytest

from dqd_server.auth import hash_key, load_keys
from dqd_server.identity import ANONYMOUS, CLIENT_ID_HEADER, IdentityResolver


def test_named_and_unnamed_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice {hash_key('a-key')}\n# comment\n{hash_key('b-key')}\n")
    names = load_keys(keys)
    resolver = IdentityResolver(names)
    assert resolver.identity([("x-api-key", "a-key")]) == "alice"
    assert resolver.identity([("x-api-key", "b-key")]).startswith("key-")
    assert resolver.identity([("x-api-key", "wrong")]) == ANONYMOUS
    assert resolver.identity(None) == ANONYMOUS


def test_header_only_when_trusted() -> None:
    meta = [(CLIENT_ID_HEADER, "tenant-7")]
    assert IdentityResolver().identity(meta) == ANONYMOUS, "an untrusted header must not name the caller"
    assert IdentityResolver(trust_header=True).identity(meta) == "tenant-7"


def test_bad_key_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("a b sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        load_keys(bad)
