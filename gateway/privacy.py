"""Pseudonyms: the store only ever sees keyed hashes of customer and visitor ids, never the ids themselves.

`Pseudonymizer` maps an id to HMAC-SHA256(key, domain + id), truncated to 128 bits and written as 32 hex
digits. Customer and visitor ids live in separate domains ("c:" / "v:" inside the MAC), so a visitor id that
happens to equal a customer id gets another pseudonym. Without the key nobody can go from a pseudonym back to
an id, or test a guessed id against the store (a plain hash could be brute-forced from a list of customer
numbers).

Rotation: writes use the current key; reads and ForgetCustomer look under the current and every previous key
(`customer_all` / `visitor_all`). Data written under an old key ages out with retention; after
retention_days the operator drops that key from id_hash_previous_keys (docs/deploy.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from gateway.config import GatewayConfig

log = logging.getLogger("gateway")
MIN_KEY_BYTES = 32
PSEUDONYM_HEX = 32
KEY_FILE = "id_hash.key"


def parse_key(text: str) -> bytes:
    """A key written as hex or base64 (standard or URL-safe); ValueError when shorter than 32 bytes. The error
    never repeats the key."""
    text = text.strip()
    raw: bytes | None = None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text
                                   else None, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None:
        raise ValueError("id_hash_key: not hex or base64")
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"id_hash_key: at least {MIN_KEY_BYTES} bytes, got {len(raw)}")
    return raw


def local_key(directory: str | Path) -> bytes:
    """The embedded default's key: read <directory>/id_hash.key, or create it once (mode 0600).

    Two processes starting at once both try an exclusive create of a temporary file and a hard link onto the
    final name: exactly one link wins and both then read the winner's key."""
    path = Path(directory) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(MIN_KEY_BYTES).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; use its key
        finally:
            tmp.unlink(missing_ok=True)
    return parse_key(path.read_text())


class Pseudonymizer:
    """Keyed pseudonyms of customer ("c:") and visitor ("v:") ids under the current key and earlier ones."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        if len(key) < MIN_KEY_BYTES or any(len(k) < MIN_KEY_BYTES for k in previous):
            raise ValueError(f"pseudonym keys need at least {MIN_KEY_BYTES} bytes")
        self.keys = (key, *[k for k in previous if k != key])

    @classmethod
    def from_config(cls, cfg: GatewayConfig) -> Pseudonymizer:
        """cfg.id_hash_key (a Secret as env GATEWAY_ID_HASH_KEY), else the generated <pki_dir>/id_hash.key, with
        cfg.id_hash_previous_keys (comma-separated) still read and forgotten."""
        if cfg.id_hash_key.strip():
            key = parse_key(cfg.id_hash_key)
        else:
            key = local_key(cfg.pki_dir)
            if not cfg.store.startswith("sqlite://"):
                log.warning("id_hash_key is not set: ids are pseudonymized under the local key in %s; every replica "
                            "sharing this store needs the same key (set GATEWAY_ID_HASH_KEY from a Secret)",
                            cfg.pki_dir)
        previous = [parse_key(k) for k in cfg.id_hash_previous_keys.split(",") if k.strip()]
        return cls(key, previous)

    @staticmethod
    def _mac(key: bytes, domain: str, ident: str) -> str:
        return hmac.new(key, f"{domain}:{ident}".encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]

    def customer(self, customer_id: str) -> str:
        """The pseudonym a customer id is written under (current key)."""
        return self._mac(self.keys[0], "c", customer_id)

    def visitor(self, anonymous_id: str) -> str:
        """The pseudonym a visitor (anonymous) id is written under (current key)."""
        return self._mac(self.keys[0], "v", anonymous_id)

    def customer_all(self, customer_id: str) -> list[str]:
        """The customer's pseudonyms under every key, current first: where reads and forgets look."""
        return [self._mac(k, "c", customer_id) for k in self.keys]

    def visitor_all(self, anonymous_id: str) -> list[str]:
        """The visitor's pseudonyms under every key, current first."""
        return [self._mac(k, "v", anonymous_id) for k in self.keys]
