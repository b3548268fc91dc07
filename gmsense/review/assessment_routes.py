"""The review app's routes of third-party assessments (gmsense.review.assessments): the forms on the
flag and licence pages, attachment downloads, and the JSON API.

Every user reads the assessments of their scope; only assessors add them (others: 403), to a flag or
licence of their scope (outside it: 404, as a missing one). A form carries the session's CSRF token,
an API call the ``X-CSRF-Token`` header. Files are checked by gmsense.review.uploads before anything
is stored; the upload routes take bodies up to MAX_UPLOAD_BODY_BYTES (gmsense.review.security).
Attachments are served as downloads (``Content-Disposition: attachment``) with the media type their
content proved, ``nosniff`` and a policy that lets nothing run, and their SHA-256 as ``Repr-Digest``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse, Response

from gmsense.errors import InputError
from gmsense.review import assessments as service
from gmsense.review import uploads
from gmsense.review.deps import MAX_ID, ApiUser, FlagId, PageUser
from gmsense.review.signing import SigningKeyError
from gmsense.store import Store, UserRow
from gmsense.store.scope import Scope

AssessmentId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
Position = Annotated[int, PathParam(ge=1, le=uploads.MAX_FILES)]
Files = Annotated[list[UploadFile | str] | None, File(description=f"up to {uploads.MAX_FILES} files of at most "
                                                            f"{uploads.MAX_FILE_BYTES // 2**20} MB: PDF, PNG, "
                                                            f"JPEG or UTF-8 plain text, told by their content")]
#: A download runs nothing, whatever its bytes: no script, no style, no plugin, a sandbox.
DOWNLOAD_CSP = "default-src 'none'; sandbox"


def file_size(n: int) -> str:
    """A size for people: bytes, KB or MB."""
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 2**20:.1f} MB"


def page_context(store: Store, user: UserRow, scope: Scope, *, action: str, error: str = "",
                 site_id: str | None = None, flag_id: int | None = None) -> dict[str, Any]:
    """What the assessments section of a flag page (``flag_id``) or licence page (``site_id``) shows;
    ``action`` is where its form posts."""
    return {"assessments": service.assessments(store, scope, site_id=site_id, flag_id=flag_id),
            "may_assess": service.may_assess(user), "verdicts": service.VERDICTS, "assessment_action": action,
            "assessment_error": error, "max_text": service.MAX_TEXT, "max_files": uploads.MAX_FILES,
            "max_mb": uploads.MAX_FILE_BYTES // 2**20, "file_size": file_size}


def install(app: FastAPI, store: Store, *, scope_of: Callable[[tuple[UserRow, Any]], Scope],
            check_csrf: Callable[[Any, str | None], None], now: Callable[[], datetime]) -> None:
    """Add the assessment routes to ``app`` (created by gmsense.review.app.create_app)."""

    @app.exception_handler(uploads.UploadError)
    async def _bad_upload(request: Request, exc: uploads.UploadError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(SigningKeyError)
    async def _no_key(request: Request, exc: SigningKeyError) -> Response:
        return JSONResponse({"detail": f"assessments cannot be signed now: {exc}"}, status_code=503)

    def refuse_non_assessors(user: UserRow) -> None:
        if not service.may_assess(user):
            raise HTTPException(403, "only third-party assessors add assessments; every role reads them")

    def record(who: tuple[UserRow, Any], kind: str, target: str | int, verdict: str, text: str,
               files: list[UploadFile | str] | None) -> service.Assessment:
        parts = []
        for part in files or []:
            if isinstance(part, str):  # a browser sends an empty file field as an empty text part
                if part:
                    raise uploads.UploadError("the files field holds text, not files: send each file as a file part")
                continue
            parts.append((part.filename, part.file))
        attachments = uploads.read_files(parts)
        return service.add(store, who[0], kind, target, verdict, text, attachments, now=now())

    def from_form(who: tuple[UserRow, Any], csrf_token: str, kind: str, target: str | int, page: str,
                  verdict: str, text: str, files: list[UploadFile | str] | None) -> Response:
        check_csrf(who[1], csrf_token)
        refuse_non_assessors(who[0])
        service.check_target(store, kind, target, scope_of(who))  # 404 before anything else
        try:
            record(who, kind, target, verdict, text, files)
        except InputError as exc:  # bad files, text or verdict, or no signing key: nothing was stored
            return RedirectResponse(f"{page}?assessment_error={quote(str(exc))}#assessments", status_code=303)
        return RedirectResponse(f"{page}#assessments", status_code=303)

    # --- pages -----------------------------------------------------------------------------------
    @app.post("/flags/{flag_id}/assessments", include_in_schema=False)
    def flag_assessment_form(flag_id: FlagId, who: PageUser, csrf_token: Annotated[str, Form()] = "",
                             verdict: Annotated[str, Form()] = "", text: Annotated[str, Form()] = "",
                             files: Files = None) -> Response:
        return from_form(who, csrf_token, "flag", flag_id, f"/flags/{flag_id}", verdict, text, files)

    @app.post("/sites/{site_id}/assessments", include_in_schema=False)
    def site_assessment_form(site_id: str, who: PageUser, csrf_token: Annotated[str, Form()] = "",
                             verdict: Annotated[str, Form()] = "", text: Annotated[str, Form()] = "",
                             files: Files = None) -> Response:
        return from_form(who, csrf_token, "licence", site_id, f"/sites/{quote(site_id, safe='')}", verdict, text,
                         files)

    @app.get("/assessments/{assessment_id}/attachments/{position}", include_in_schema=False)
    def attachment_download(assessment_id: AssessmentId, position: Position, who: PageUser) -> Response:
        return download(assessment_id, position, scope_of(who))

    # --- JSON API --------------------------------------------------------------------------------
    @app.get("/api/flags/{flag_id}/assessments", tags=["assessments"])
    def api_flag_assessments(flag_id: FlagId, who: ApiUser) -> list[dict[str, Any]]:
        """The third-party assessments of a flag, oldest first."""
        sc = scope_of(who)
        service.check_target(store, "flag", flag_id, sc)
        return [a.as_json() for a in service.assessments(store, sc, flag_id=flag_id)]

    @app.post("/api/flags/{flag_id}/assessments", tags=["assessments"], status_code=201)
    def api_flag_assess(flag_id: FlagId, who: ApiUser, verdict: Annotated[str, Form()], text: Annotated[str, Form()],
                        files: Files = None, x_csrf_token: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Add a signed assessment to a flag (assessors; multipart form: ``verdict`` compliant |
        non_compliant | needs_follow_up, ``text``, ``files``); needs the ``X-CSRF-Token`` header from
        /api/me. 403: not an assessor; 404: the flag is not in your scope; 400 / 413 / 415: a bad text
        or file (nothing is stored); 503: the server has no signing key."""
        check_csrf(who[1], x_csrf_token)
        refuse_non_assessors(who[0])
        service.check_target(store, "flag", flag_id, scope_of(who))
        return record(who, "flag", flag_id, verdict, text, files).as_json()

    @app.get("/api/sites/{site_id}/assessments", tags=["assessments"])
    def api_site_assessments(site_id: str, who: ApiUser) -> list[dict[str, Any]]:
        """The third-party assessments of a licence and of its flags, oldest first."""
        sc = scope_of(who)
        service.check_target(store, "licence", site_id, sc)
        return [a.as_json() for a in service.assessments(store, sc, site_id=site_id)]

    @app.post("/api/sites/{site_id}/assessments", tags=["assessments"], status_code=201)
    def api_site_assess(site_id: str, who: ApiUser, verdict: Annotated[str, Form()], text: Annotated[str, Form()],
                        files: Files = None, x_csrf_token: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Add a signed assessment to a licence (assessors); as for a flag."""
        check_csrf(who[1], x_csrf_token)
        refuse_non_assessors(who[0])
        service.check_target(store, "licence", site_id, scope_of(who))
        return record(who, "licence", site_id, verdict, text, files).as_json()

    @app.get("/api/assessments/{assessment_id}", tags=["assessments"])
    def api_assessment(assessment_id: AssessmentId, who: ApiUser) -> dict[str, Any]:
        """One assessment: target, author, time, verdict, text, digest, signature and attachments."""
        return service.get(store, assessment_id, scope_of(who)).as_json()

    @app.get("/api/assessments/{assessment_id}/attachments/{position}", tags=["assessments"])
    def api_attachment(assessment_id: AssessmentId, position: Position, who: ApiUser) -> Response:
        """An attachment's bytes, as a download."""
        return download(assessment_id, position, scope_of(who))

    @app.get("/api/audit/assessments", tags=["assessments"])
    def api_audit_assessments(who: ApiUser) -> list[dict[str, Any]]:
        """Every assessment in your scope, oldest first (append-only)."""
        return [a.as_json() for a in service.assessments(store, scope_of(who))]

    def download(assessment_id: int, position: int, sc: Scope) -> Response:
        row, content = service.attachment(store, assessment_id, position, sc)
        ascii_name = row.filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
        sha = base64.b64encode(bytes.fromhex(row.sha256)).decode()
        media_type = "text/plain; charset=utf-8" if row.media_type == "text/plain" else row.media_type
        return Response(content, media_type=media_type, headers={
            "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(row.filename)}",
            "X-Content-Type-Options": "nosniff", "Content-Security-Policy": DOWNLOAD_CSP,
            "Repr-Digest": f"sha-256=:{sha}:", "Cache-Control": "private, no-store"})
