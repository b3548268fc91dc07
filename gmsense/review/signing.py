"""How an assessment is sealed: a canonical serialisation, its SHA-256 digest, and an HMAC-SHA256
signature with the deployment's key, which proves that the server recorded it as it reads now.

The canonical serialisation is UTF-8 JSON with sorted keys and no spaces of: the format name, the
assessment's number (``seq``), the author (user id and name), the target (licence, and flag or
null), the time (UTC, ISO 8601 to the second), the verdict, the text, and each attachment in order
(position, name, media type, size, SHA-256). Anyone holding a row can recompute the digest; only
the holder of the key can make a signature that matches it, so a row changed in the database (and
its digest recomputed to match) fails verification (``gmsense assessments verify``).

The key is a secret of the deployment, read from the environment variable :data:`SIGNING_KEY_ENV`
when an assessment is signed or verified, never from a file of the repository or a setting.
``key_id`` (recorded with each signature) names the key without revealing it, so a row signed with
an earlier key says so instead of looking tampered with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gmsense.errors import InputError

SIGNING_KEY_ENV = "GMSENSE_ASSESSMENT_KEY"
#: The shortest key accepted (characters): 32 random characters or more, e.g. ``secrets.token_hex(32)``.
MIN_KEY_CHARS = 32
FORMAT = "gmsense-assessment/1"


class SigningKeyError(InputError):
    """The signing key is not set (or too short) in the environment."""


@dataclass(frozen=True)
class SigningKey:
    """The deployment's key: the secret bytes and the id recorded with each signature."""

    secret: bytes

    @property
    def key_id(self) -> str:
        """16 hex digits naming the key (a hash of it: the key cannot be recovered from it)."""
        return hashlib.sha256(b"gmsense-assessment-key-id\0" + self.secret).hexdigest()[:16]

    def sign(self, canonical_bytes: bytes) -> str:
        """The hex HMAC-SHA256 of ``canonical_bytes``."""
        return hmac.new(self.secret, canonical_bytes, hashlib.sha256).hexdigest()

    def matches(self, canonical_bytes: bytes, signature: str) -> bool:
        """Whether ``signature`` is this key's signature of ``canonical_bytes`` (in constant time)."""
        return hmac.compare_digest(self.sign(canonical_bytes), signature or "")


def signing_key(env: Mapping[str, str] | None = None) -> SigningKey:
    """The key from the environment; a :class:`SigningKeyError` saying what to set if it is missing
    or shorter than MIN_KEY_CHARS."""
    value = (os.environ if env is None else env).get(SIGNING_KEY_ENV, "")
    if not value:
        raise SigningKeyError(f"assessments are signed with a key of the deployment, and none is set: set the "
                              f"environment variable {SIGNING_KEY_ENV} (at least {MIN_KEY_CHARS} random characters, "
                              f"e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`) where the "
                              f"review app and this command run")
    if len(value) < MIN_KEY_CHARS:
        raise SigningKeyError(f"the environment variable {SIGNING_KEY_ENV} holds {len(value)} characters; a signing "
                              f"key needs at least {MIN_KEY_CHARS} random characters")
    return SigningKey(value.encode("utf-8"))


@dataclass(frozen=True)
class AttachmentFacts:
    """What an assessment's signature covers of one attachment."""

    position: int
    filename: str
    media_type: str
    size: int
    sha256: str


def canonical(*, seq: int, user_id: int, username: str, target_kind: str, site_id: str, flag_id: int | None,
              created_at: datetime, verdict: str, text: str, attachments: Sequence[AttachmentFacts]) -> bytes:
    """The canonical serialisation of an assessment (see the module docstring)."""
    record: dict[str, Any] = {
        "format": FORMAT, "seq": seq, "author": {"id": user_id, "username": username},
        "target": {"kind": target_kind, "licence": site_id, "flag": flag_id},
        "created_at": created_at.replace(microsecond=0).isoformat(timespec="seconds"),
        "verdict": verdict, "text": text,
        "attachments": [{"position": a.position, "filename": a.filename, "media_type": a.media_type,
                         "size": a.size, "sha256": a.sha256} for a in attachments],
    }
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def digest(canonical_bytes: bytes) -> str:
    """The hex SHA-256 of a canonical serialisation."""
    return hashlib.sha256(canonical_bytes).hexdigest()
