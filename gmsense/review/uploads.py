"""Files attached to an assessment: how many, how large, which types, and their names.

A file is accepted only if its **content** is one of the allowed types, told by its first bytes (its
"magic"), and its name's extension is one of that type's: a PDF (``%PDF-``), a PNG (the 8-byte PNG
signature), a JPEG (``FF D8 FF``) or plain text (UTF-8, no NUL or other control characters but tab,
line breaks and form feed). The type a browser claims is ignored; the type stored (and served back)
is the one the content proved. A name is reduced to its last path part with only letters (any
script), digits, spaces and ``. _ - ( )``, at most MAX_FILENAME characters, never starting with a dot.
Any refusal is an :class:`UploadError` naming the file and the rule, raised before anything is stored.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from gmsense.errors import InputError

#: At most this many files per assessment.
MAX_FILES = 5
#: At most this many bytes per file (10 MiB).
MAX_FILE_BYTES = 10 * 1024 * 1024
#: The largest request body of an upload route: the files, plus room for the text and form fields.
MAX_UPLOAD_BODY_BYTES = MAX_FILES * MAX_FILE_BYTES + 1_000_000
#: The routes that take uploads (POST; gmsense.review.assessment_routes): their bodies may be that large.
UPLOAD_PATHS = re.compile(r"/(?:api/)?(?:flags/\d+|sites/[^/]+)/assessments")
MAX_FILENAME = 120
#: The allowed media types and the name extensions each may carry.
ALLOWED_TYPES = {"application/pdf": (".pdf",), "image/png": (".png",), "image/jpeg": (".jpg", ".jpeg"),
                 "text/plain": (".txt",)}
TYPE_NAMES = {"application/pdf": "PDF", "image/png": "PNG", "image/jpeg": "JPEG", "text/plain": "plain text"}
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_PDF = b"%PDF-"
#: Control characters plain text may hold: tab, line feed, form feed, carriage return.
_TEXT_CONTROLS = {"\t", "\n", "\x0c", "\r"}
_UNSAFE_NAME = re.compile(r"[^\w .()\-]+")


class UploadError(InputError):
    """A file that is not accepted; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Attachment:
    """An accepted file: its sanitised name, the media type its content proved, and its bytes."""

    filename: str
    media_type: str
    content: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def sniff(content: bytes) -> str | None:
    """The allowed media type ``content`` is, by its first bytes (plain text: by decoding it), or None."""
    if content.startswith(_PDF):
        return "application/pdf"
    if content.startswith(_PNG):
        return "image/png"
    if content.startswith(_JPEG):
        return "image/jpeg"
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(unicodedata.category(c) == "Cc" and c not in _TEXT_CONTROLS for c in text):
        return None
    return "text/plain"


def sanitise_filename(name: str | None) -> str:
    """A safe file name (see the module docstring); ``attachment`` if nothing of ``name`` is left."""
    base = unicodedata.normalize("NFC", re.split(r"[\\/]", name or "")[-1])
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C")  # control, format, unassigned
    base = re.sub(r"\s+", " ", _UNSAFE_NAME.sub("_", base)).strip(" .")
    if len(base) > MAX_FILENAME:
        stem, dot, ext = base.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        base = (stem if keep else base)[:MAX_FILENAME - len(keep) - 1].rstrip(" .") + ("." + keep if keep else "")
    return base or "attachment"


def _extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f".{ext.lower()}" if dot and stem else ""


def check_file(name: str | None, content: bytes) -> Attachment:
    """``content`` uploaded as ``name``, accepted as an :class:`Attachment`, or an UploadError."""
    filename = sanitise_filename(name)
    if len(content) > MAX_FILE_BYTES:
        raise UploadError(f"{filename} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB: attach a smaller file",
                          status=413)
    if not content:
        raise UploadError(f"{filename} is empty")
    media_type = sniff(content)
    allowed = ", ".join(f"{TYPE_NAMES[t]} ({' '.join(exts)})" for t, exts in ALLOWED_TYPES.items())
    if media_type is None:
        raise UploadError(f"{filename} is not a PDF, PNG, JPEG or UTF-8 plain-text file by its content (whatever "
                          f"its name says); allowed: {allowed}", status=415)
    extension = _extension(filename)
    if extension not in ALLOWED_TYPES[media_type]:
        raise UploadError(f"{filename}: its content is {TYPE_NAMES[media_type]} but its name ends "
                          f"{extension or 'without an extension'}; name it *{ALLOWED_TYPES[media_type][0]}",
                          status=415)
    return Attachment(filename, media_type, content)


def read_files(files: Iterable[tuple[str | None, BinaryIO]]) -> list[Attachment]:
    """The accepted attachments of uploaded ``(name, file)`` pairs, in order; a part without a name
    or content (a file field a browser sends empty) is skipped. More than MAX_FILES files are refused
    before any is read; of each, at most MAX_FILE_BYTES + 1 bytes are read."""
    parts = [(name, stream) for name, stream in files]
    named = sum(1 for name, _ in parts if name)
    if named > MAX_FILES:
        raise UploadError(f"at most {MAX_FILES} files per assessment; {named} were attached")
    out: list[Attachment] = []
    for name, stream in parts:
        content = stream.read(MAX_FILE_BYTES + 1)
        if name or content:
            out.append(check_file(name, content))
    return out
