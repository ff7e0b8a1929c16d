"""Gateway keys: `gw-` + 32 random bytes (url-safe base64), shown once, stored as a SHA-256 hash.

A keyed slow hash is unnecessary: the key has 256 bits of entropy, so a plain
SHA-256 cannot be brute-forced, and lookups by hash stay a single index probe.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "gw-"
VISIBLE_PREFIX_LENGTH = 10  # "gw-" and 7 characters: enough to recognise a key in lists and logs


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    return key[:VISIBLE_PREFIX_LENGTH]


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)
