"""The regulators' review app: FastAPI, server-rendered Jinja2 pages, a JSON API under /api.

Everything it serves comes from the app itself (no CDN), so it works on an offline network.
Pages need a logged-in user (anonymous visitors are sent to /login); the API answers 401. Every
form carries the session's CSRF token and every state-changing API call its ``X-CSRF-Token``
header. Only reviewers and admins decide; only admins manage users; viewers only read; assessors
read and add signed third-party assessments (gmsense.review.assessment_routes).
Every user sees their scope only (gmsense.store.scope: the province, cities, counties or, for
assessors, licences): each page, API route, export, picture, dashboard figure and audit view asks
the database for the rows in scope, and an id outside it is answered exactly as a missing one (404).
The API docs and schema need a login too. Every response carries the security headers (see
gmsense.review.security), request bodies over the limit are refused with 413 before parsing, and
an id no database integer can hold is a 404.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gmsense import __version__
from gmsense.config import Settings, load_settings
from gmsense.errors import InputError
from gmsense.outputs.i18n import (
    LANGUAGES,
    area,
    attr_value,
    catalog,
    coverage_sentences,
    flag_sentence,
    layer_kind_name,
    t,
)
from gmsense.outputs.scorecards import licence_figures
from gmsense.records import PATCH_CLASSES
from gmsense.review import assessment_routes, auth, escalation, service, uploads
from gmsense.review import assessments as assessment_service
from gmsense.review import restoration as restoration_service
from gmsense.review.cache import DerivedCache, ScanCache
from gmsense.review.charts import trend_svg
from gmsense.review.deps import (
    MAX_ID,
    SESSION_COOKIE,
    ApiUser,
    FlagId,
    LoginRequiredError,
    PageUser,
)
from gmsense.review.deps import current_user as _current
from gmsense.review.figures import Pictures
from gmsense.review.security import (
    MAX_BODY_BYTES,
    SECURITY_HEADERS,
    SecurityMiddleware,
    add_nonce,
    docs_csp,
    new_nonce,
)
from gmsense.store import ReviewRow, Store, UserRow
from gmsense.store.scope import PROVINCE, Scope, parse_scope

HERE = Path(__file__).resolve().parent
LOGIN_CSRF_COOKIE = "gmsense_login_csrf"
LANG_COOKIE = "gmsense_lang"
EXPORT_FORMATS = {"geojson": "application/geo+json", "gpkg": "application/geopackage+sqlite3", "csv": "text/csv"}


class StageAction(BaseModel):
    """An action on the pending stage of a flag's escalation chain (JSON API)."""

    reason: str = Field("", description="why the stage goes back to the level before (required to return)",
                        max_length=escalation.MAX_TEXT)
    comment: str = Field("", description="a note with the signature (required when it confirms the flag)",
                         max_length=escalation.MAX_TEXT)


class Decision(BaseModel):
    """A reviewer's decision on a flag (JSON API)."""

    decision: str = Field(description="confirm | dismiss | field_visit")
    reason: str = Field(description="confirm: violation; dismiss: natural_change, cloud_shadow, approved_work, "
                                    "misregistration, other; field_visit: needs_field_visit")
    comment: str = Field(description="what the images show; required", max_length=service.MAX_COMMENT)
    corrected_class: str | None = Field(None, description="the disturbance class the reviewer saw, if different")


def pick_language(request: Request, user: UserRow | None = None) -> str:
    """``?lang=``, then the user's setting, then the language cookie, then Accept-Language."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked
    if user is not None and user.lang in LANGUAGES:
        return user.lang
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LANGUAGES:
        return cookie
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"


def create_app(store: Store, *, cache_dir: Path | None = None, secure_cookies: bool = False,
               max_body_bytes: int = MAX_BODY_BYTES, warm_pictures: int = 0,
               settings: Settings | None = None, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The app over ``store``; pictures are cached in ``cache_dir`` (a temporary folder if None).
    ``secure_cookies``: mark cookies Secure (set it when served over HTTPS behind a proxy);
    ``max_body_bytes``: larger request bodies are refused (413) before they are parsed;
    ``warm_pictures``: render the pictures of the first N flags of the queue in a background
    thread at start (``app.state.warming``), so the first look at a flag is quick; ``settings``:
    the restoration target (default: the configured defaults), as ``gmsense restoration report``,
    and the escalation chains (``settings.rules.escalation``); ``clock``: the time (naive UTC) for
    deadlines and stage actions (tests pass a controlled one; default: now)."""
    app = FastAPI(title="gmsense review", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.openapi_version = "3.0.3"  # the bundled Swagger UI (4.x) renders OpenAPI 3.0, not 3.1
    app.add_middleware(SecurityMiddleware, max_body_bytes=max_body_bytes,
                       upload_body_bytes=uploads.MAX_UPLOAD_BODY_BYTES, upload_paths=uploads.UPLOAD_PATHS)
    templates = Jinja2Templates(directory=HERE / "templates")
    settings = settings or load_settings()
    cache = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="gmsense-review-"))
    pictures = Pictures(store, cache, settings.recovery)
    app.state.store, app.state.pictures = store, pictures
    rules = settings.rules
    kept = ScanCache()  # figures only scans and licence imports change (gmsense.review.cache)
    # The dashboard's green-survey rankings, by the flag counts they were ranked with (see dashboard()).
    rankings = DerivedCache()

    def now() -> datetime:
        return clock() if clock is not None else datetime.now(UTC).replace(tzinfo=None)
    app.state.warming = None
    if warm_pictures > 0:
        app.state.warming = threading.Thread(target=pictures.warm, args=(warm_pictures,), daemon=True,
                                             name="gmsense-warm-pictures")
        app.state.warming.start()
    import swagger_ui_bundle

    # The more specific mount first: Starlette takes the first matching prefix.
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # --- plumbing --------------------------------------------------------------------------
    def render(request: Request, name: str, user: UserRow | None, status_code: int = 200,
               session: Any = None, **context: Any) -> HTMLResponse:
        lang = pick_language(request, user)
        unit = request.query_params.get("unit") if request.query_params.get("unit") in ("ha", "mu") else (
            "mu" if lang == "zh" else "ha")

        def tr(key: str, **params: Any) -> str:
            return t(key, lang, **params)

        def url_lang(target: str) -> str:
            query = dict(request.query_params)
            query["lang"] = target
            return f"{request.url.path}?{urlencode(query)}"

        response = templates.TemplateResponse(request, name, {
            "user": user, "lang": lang, "unit": unit, "t": tr, "csrf": session.csrf_token if session else "",
            "can_decide": auth.can(user, "decide"), "can_manage": auth.can(user, "manage_users"),
            "area": lambda m2: area(m2, lang, unit) if m2 is not None else "-",
            "sentence": lambda flag: flag_sentence(flag, lang, unit), "url_lang": url_lang,
            "field_label": lambda key: t(f"field.{key}", lang) if f"field.{key}" in catalog("en") else key,
            "label": lambda prefix, key: t(f"{prefix}.{key}", lang) if f"{prefix}.{key}" in catalog("en") else key,
            "attr": lambda k, v: attr_value(k, v, lang), "layer_kind": lambda k: layer_kind_name(k, lang),
            "version": __version__, **context}, status_code=status_code)
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="lax",
                                secure=secure_cookies)
        return response

    def scope(who: tuple[UserRow, Any]) -> Scope:
        """What the logged-in user sees."""
        return auth.user_scope(store, who[0])

    def check_csrf(session: Any, token: str | None) -> None:
        if not auth.csrf_ok(session.csrf_token, token):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")

    @app.exception_handler(LoginRequiredError)
    async def _to_login(request: Request, _exc: LoginRequiredError) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(Exception)
    async def _crashed(request: Request, _exc: Exception) -> Response:
        """An unexpected error: a short message, with the security headers, which this response
        (sent by Starlette's outermost error middleware) must carry itself. Starlette raises the
        exception again afterwards, so the server logs its traceback."""
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        detail = "internal error: the server log has the details"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=500, headers=headers)
        page = f"<!doctype html><title>500</title><h1>500</h1><p>{detail}</p>"
        return HTMLResponse(page, status_code=500, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        found = _current(request)
        return render(request, "error.html", found[0] if found else None, status_code=exc.status_code,
                      session=found[1] if found else None, status=exc.status_code, detail=exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if any(e.get("loc", ("",))[0] == "path" for e in exc.errors()):
            return await _http_error(request, HTTPException(404, "no such page: the id is not valid"))
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}" for e in exc.errors())
        return await _http_error(request, HTTPException(422, detail))

    @app.exception_handler(service.NotFoundError)
    async def _not_found(request: Request, exc: service.NotFoundError) -> Response:
        return await _http_error(request, HTTPException(404, str(exc)))

    @app.exception_handler(InputError)
    async def _bad_input(request: Request, exc: InputError) -> Response:
        return await _http_error(request, HTTPException(400, str(exc)))

    @app.exception_handler(escalation.ConflictError)
    async def _conflict(request: Request, exc: escalation.ConflictError) -> Response:
        return await _http_error(request, HTTPException(409, str(exc)))

    @app.exception_handler(PermissionError)
    async def _forbidden(request: Request, exc: PermissionError) -> Response:
        return await _http_error(request, HTTPException(403, str(exc)))

    def queue_filter(request: Request) -> service.QueueFilter:
        names = {f.name for f in fields(service.QueueFilter)}
        given = {k: v.strip() for k, v in request.query_params.items() if k in names and v.strip()}
        return service.QueueFilter(**given)

    # --- login ------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str = "/flags", error: str = "") -> HTMLResponse:
        import secrets

        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = render(request, "login.html", None, login_csrf=token, next=_safe_next(next), error=error)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies)
        return response

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
              csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/flags") -> Response:
        if not auth.csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE) or "", csrf_token):
            raise HTTPException(403, "missing or wrong CSRF token: reload the login page and try again")
        client = request.client.host if request.client else "unknown"
        try:
            token, _ = auth.login(store, username, password, client)
        except auth.LoginRefusedError as exc:
            lang = pick_language(request)
            key = "ui.login_throttled" if exc.throttled else "ui.login_failed"
            return render(request, "login.html", None, status_code=429 if exc.throttled else 401,
                          login_csrf=request.cookies.get(LOGIN_CSRF_COOKIE), next=_safe_next(next),
                          error=t(key, lang))
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=auth.SESSION_HOURS * 3600, httponly=True,
                            samesite="lax", secure=secure_cookies)
        response.delete_cookie(LOGIN_CSRF_COOKIE)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, who: PageUser, csrf_token: Annotated[str, Form()] = "") -> Response:
        check_csrf(who[1], csrf_token)
        auth.logout(store, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.post("/language", include_in_schema=False)
    def language(request: Request, who: PageUser, lang: Annotated[str, Form()],
                 csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/flags") -> Response:
        check_csrf(who[1], csrf_token)
        auth.set_language(store, who[0].id, lang)
        return RedirectResponse(_safe_next(next), status_code=303)

    # --- pages ------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/flags", status_code=303)

    @app.get("/flags", response_class=HTMLResponse, include_in_schema=False)
    def flags_page(request: Request, who: PageUser, page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> HTMLResponse:
        flt = queue_filter(request)
        sc = scope(who)
        result = service.queue(store, flt, page, scope=sc, rules=rules, now=now())
        params = flt.as_params()
        return render(request, "flags.html", who[0], session=who[1], queue=result, filter=flt,
                      choices=kept.get(store, ("choices", str(sc)), lambda: service.filter_choices(store, sc)),
                      params=params,
                      page_url=lambda p: "/flags?" + urlencode({**params, "page": p}),
                      export_query=urlencode(params))

    @app.get("/flags/{flag_id}", response_class=HTMLResponse, include_in_schema=False)
    def flag_page(request: Request, flag_id: FlagId, who: PageUser,
                  error: str = "", assessment_error: str = "") -> HTMLResponse:
        sc = scope(who)
        flag, site, patch = service.get_flag(store, flag_id, sc)
        scans = _scans(store, {flag.created_scan_id, flag.updated_scan_id})
        chain = escalation.get_chain(store, flag_id, sc, rules, now())
        return render(request, "flag.html", who[0], session=who[1], flag=flag, site=site, patch=patch,
                      history=service.history(store, flag_id, sc), scans=scans, reasons=service.REASONS,
                      classes=PATCH_CLASSES, evidence=(patch.metrics or {}).get("evidence", {}) if patch else {},
                      error=error, chain=chain, stage_actor=_stage_actor(chain, who[0]),
                      **assessment_routes.page_context(store, who[0], sc, action=f"/flags/{flag_id}/assessments",
                                                       error=assessment_error, flag_id=flag_id))

    def _stage_actor(chain: escalation.Chain, user: UserRow) -> dict[str, Any]:
        """Whether ``user`` may act on the pending stage, and if not why (for the page and the API)."""
        stage = chain.pending
        if stage is None or not auth.can(user, "decide") or not escalation.may_act(user, stage):
            return {"stage": None, "blocked_by": None}
        other = escalation.duties_conflict(store, chain, user)
        return {"stage": None if other is not None else stage.index + 1,
                "blocked_by": None if other is None else other + 1}

    @app.post("/flags/{flag_id}/stages/{number}/{action}", include_in_schema=False)
    def stage_form(request: Request, flag_id: FlagId, number: Annotated[int, PathParam(ge=1, le=100)], action: str,
                   who: PageUser, csrf_token: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = "",
                   comment: Annotated[str, Form()] = "") -> Response:
        user, session = who
        check_csrf(session, csrf_token)
        if action not in escalation.ACTIONS:
            raise HTTPException(404, "stage actions: sign, return")
        service.get_flag(store, flag_id, scope(who))  # 404 before anything else (outside the scope too)
        try:
            escalation.act(store, flag_id, user, number - 1, action, reason=reason, comment=comment, rules=rules,
                           now=now())
        except InputError as exc:
            return RedirectResponse(f"/flags/{flag_id}?error={quote(str(exc))}#escalation", status_code=303)
        return RedirectResponse(f"/flags/{flag_id}#escalation", status_code=303)

    @app.post("/flags/{flag_id}/decision", include_in_schema=False)
    def decide_form(request: Request, flag_id: FlagId, who: PageUser,
                    csrf_token: Annotated[str, Form()] = "",
                    decision: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = "",
                    comment: Annotated[str, Form()] = "", corrected_class: Annotated[str, Form()] = "") -> Response:
        user, session = who
        check_csrf(session, csrf_token)
        if not auth.can(user, "decide"):
            raise HTTPException(403, t("ui.viewer_cannot_decide", pick_language(request, user)))
        service.get_flag(store, flag_id, scope(who))  # 404 before anything else (outside the scope too)
        try:
            service.decide(store, flag_id, user, decision, reason, comment, corrected_class or None, rules=rules,
                           now=now())
        except InputError as exc:
            return RedirectResponse(f"/flags/{flag_id}?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"/flags/{flag_id}", status_code=303)

    @app.get("/flags/{flag_id}/chips.png", include_in_schema=False)
    def chips_png(request: Request, flag_id: FlagId, who: PageUser) -> Response:
        return _png(pictures.chips(flag_id, pick_language(request, who[0]), scope(who)))

    @app.get("/flags/{flag_id}/trajectory.png", include_in_schema=False)
    def trajectory_png(request: Request, flag_id: FlagId, who: PageUser) -> Response:
        data = pictures.trajectory(flag_id, pick_language(request, who[0]), scope(who))
        if data is None:
            raise HTTPException(404, f"flag {flag_id} has no patch, so no trajectory")
        return _png(data)

    @app.get("/sites/{site_id}", response_class=HTMLResponse, include_in_schema=False)
    def site_page(request: Request, site_id: str, who: PageUser, assessment_error: str = "") -> HTMLResponse:
        sc = scope(who)
        site, patches, flags = service.get_site(store, site_id, sc)
        last = store.last_unit(site_id)
        coverage = coverage_sentences(last.stats, last.scan_id, pick_language(request, who[0])) if last else []
        action = f"/sites/{quote(site_id, safe='')}/assessments"
        return render(request, "site.html", who[0], session=who[1], site=site, patches=patches, flags=flags,
                      coverage=coverage, **assessment_routes.page_context(store, who[0], sc, action=action,
                                                                          error=assessment_error, site_id=site_id))

    @app.get("/sites/{site_id}/map.png", include_in_schema=False)
    def site_map_png(request: Request, site_id: str, who: PageUser) -> Response:
        return _png(pictures.site_map(site_id, pick_language(request, who[0]), scope(who)))

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request, who: PageUser, by: str = "county") -> HTMLResponse:
        """The figures that only scans change are kept between scans (gmsense.review.cache); the flags
        per licence are read at every request from the counts the database keeps as flags are written
        (revision 0015: a decision shows at once). The green-survey ranking, a pure function of the
        kept licence figures and of those counts, is kept by the counts it was ranked with: ranked
        again only when a count it uses changed."""
        from gmsense.outputs.summary_report import (
            GROUPINGS,
            licence_flag_counts,
            scorecard_rows,
            summary_scan_figures,
            summary_tables,
        )

        if by not in GROUPINGS:
            raise HTTPException(400, f"cannot group by {by!r}; choose one of: {', '.join(GROUPINGS)}")
        sc = scope(who)
        counts = licence_flag_counts(store, sc)
        tables = summary_tables(store, by, sc, flag_counts=counts, scan_figures=kept.get(
            store, ("summary", by, str(sc)), lambda: summary_scan_figures(store, by, sc)))
        head, cards = ([], [])
        if service.has_licences(store, sc):
            figures = kept.get(store, ("scorecards", str(sc)),
                               lambda: licence_figures(store, settings, sc, years=False))
            lang = pick_language(request, who[0])
            ranked_by = tuple(sorted((site_id, c["violations"], c["open"]) for site_id, c in counts.items()))
            head, cards = rankings.get(figures, (str(sc), lang, ranked_by),
                                       lambda: scorecard_rows(store, lang, sc, figures, counts, ends=RANKING_ENDS))
        return render(request, "dashboard.html", who[0], session=who[1], tables=tables,
                      by=by, groupings=GROUPINGS, cards_head=head, cards=cards,
                      formula=t("summary.scorecards_formula", pick_language(request, who[0])),
                      overdue=escalation.pending_stages(store, sc, rules=rules, now=now(), overdue_only=True))

    @app.get("/dashboard/{by}.png", include_in_schema=False)
    def dashboard_png(request: Request, by: str, who: PageUser) -> Response:
        from gmsense.outputs.summary_report import GROUPINGS, summary_scan_figures, summary_tables

        if by not in GROUPINGS:
            raise HTTPException(404, f"no grouping {by!r}")
        sc = scope(who)
        tables = summary_tables(store, by, sc, scan_figures=kept.get(
            store, ("summary", by, str(sc)), lambda: summary_scan_figures(store, by, sc)))
        return _png(pictures.dashboard(by, pick_language(request, who[0]), scope=sc, tables=tables))

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request, who: PageUser) -> HTMLResponse:
        sc = scope(who)
        return render(request, "audit.html", who[0], session=who[1],
                      entries=list(reversed(service.history(store, scope=sc))),
                      restoration_entries=list(reversed(restoration_service.history(store, scope=sc))),
                      stage_entries=list(reversed(escalation.history(store, sc))),
                      assessment_entries=list(reversed(assessment_service.assessments(store, sc))))

    # --- restoration (issue 19) ---------------------------------------------------------------
    @app.get("/restoration", response_class=HTMLResponse, include_in_schema=False)
    def restoration_page(request: Request, who: PageUser) -> HTMLResponse:
        flt = restoration_service.RestorationFilter(**{
            k: v.strip() for k, v in request.query_params.items() if k in restoration_service.FILTERS and v.strip()})
        lang = pick_language(request, who[0])
        return render(request, "restoration.html", who[0], session=who[1], filter=flt,
                      view=restoration_service.overview(store, settings, flt, scope(who)), pct=_pct,
                      verdict=lambda met: "-" if met is None or met != met else t(
                          "restoration.met" if met else "restoration.not_met", lang),
                      columns=("group", "damaged", "restored", "rate", "target", "verdict", "new_damaged",
                               "new_restored"), trend_chart=trend_svg)

    @app.get("/restoration/{register_id}", response_class=HTMLResponse, include_in_schema=False)
    def restoration_polygon(request: Request, register_id: str, who: PageUser, error: str = "") -> HTMLResponse:
        sc = scope(who)
        polygon, rows, change = restoration_service.get_polygon(store, register_id, sc)
        return render(request, "restoration_polygon.html", who[0], session=who[1], polygon=polygon, rows=rows,
                      change=change, history=restoration_service.history(store, register_id, sc),
                      reasons=restoration_service.REASONS, error=error, pct=_pct)

    @app.post("/restoration/{register_id}/decision", include_in_schema=False)
    def restoration_decide(request: Request, register_id: str, who: PageUser,
                           csrf_token: Annotated[str, Form()] = "", decision: Annotated[str, Form()] = "",
                           reason: Annotated[str, Form()] = "", comment: Annotated[str, Form()] = "",
                           year: Annotated[int | None, Form()] = None,
                           change: Annotated[str, Form()] = "") -> Response:
        user, session = who
        check_csrf(session, csrf_token)
        if not auth.can(user, "decide"):
            raise HTTPException(403, t("ui.viewer_cannot_decide", pick_language(request, user)))
        restoration_service.get_polygon(store, register_id, scope(who))  # 404 before anything else
        target = f"/restoration/{quote(register_id, safe='')}"
        try:
            restoration_service.decide(store, register_id, user, decision, reason, comment, year, change or None)
        except InputError as exc:
            return RedirectResponse(f"{target}?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(target, status_code=303)

    @app.get("/export/{what}.{fmt}", include_in_schema=False)
    def export(request: Request, what: str, fmt: str, who: PageUser) -> Response:
        return _export(request, what, fmt, scope(who))

    # --- users (admins) ---------------------------------------------------------------------
    def admin(who: tuple[UserRow, Any]) -> None:
        if not auth.can(who[0], "manage_users"):
            raise HTTPException(403, "only admins manage users")

    @app.get("/admin/users", response_class=HTMLResponse, include_in_schema=False)
    def users_page(request: Request, who: PageUser, error: str = "") -> HTMLResponse:
        admin(who)
        users = auth.list_users(store)
        return render(request, "users.html", who[0], session=who[1], users=users, roles=auth.ROLES,
                      scopes={u.id: str(auth.user_scope(store, u)) for u in users}, error=error)

    @app.post("/admin/users", include_in_schema=False)
    def users_add(request: Request, who: PageUser, csrf_token: Annotated[str, Form()] = "",
                  username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
                  role: Annotated[str, Form()] = "viewer", scope_text: Annotated[str, Form(alias="scope")] = "",
                  ) -> Response:
        check_csrf(who[1], csrf_token)
        admin(who)
        try:
            given = parse_scope(scope_text) if scope_text.strip() or role != "admin" else PROVINCE  # as the CLI
            auth.add_user(store, username, password, role, scope=given)
        except InputError as exc:
            return RedirectResponse(f"/admin/users?error={quote(str(exc))}", status_code=303)
        return RedirectResponse("/admin/users", status_code=303)

    @app.post("/admin/users/{username}/active", include_in_schema=False)
    def users_active(request: Request, username: str, who: PageUser, csrf_token: Annotated[str, Form()] = "",
                     active: Annotated[str, Form()] = "0") -> Response:
        check_csrf(who[1], csrf_token)
        admin(who)
        yourself = auth.normalise_username(username) == auth.normalise_username(who[0].username)
        if yourself and active != "1":
            return RedirectResponse(f"/admin/users?error={quote('you cannot disable yourself')}", status_code=303)
        auth.set_active(store, username, active == "1")
        return RedirectResponse("/admin/users", status_code=303)

    # --- JSON API ---------------------------------------------------------------------------
    @app.get("/api/docs", include_in_schema=False)
    def api_docs(who: PageUser) -> HTMLResponse:
        """Swagger UI (logged-in users); its inline start-up script runs by a per-response nonce."""
        page = get_swagger_ui_html(openapi_url="/api/openapi.json", title="gmsense review API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})
        nonce = new_nonce()
        return HTMLResponse(add_nonce(page.body.decode(), nonce),
                            headers={"Content-Security-Policy": docs_csp(nonce)})

    @app.get("/api/openapi.json", include_in_schema=False)
    def api_schema(who: ApiUser) -> dict[str, Any]:
        """The OpenAPI schema of the JSON API (logged-in users)."""
        return app.openapi()

    @app.get("/api/me", tags=["users"])
    def api_me(who: ApiUser) -> dict[str, Any]:
        """The logged-in user, their role and the CSRF token to send as ``X-CSRF-Token``."""
        user, session = who
        sc = scope(who)
        return {"username": user.username, "role": user.role, "lang": user.lang, "csrf_token": session.csrf_token,
                "scope": {"kind": sc.kind, "codes": list(sc.codes)}}

    @app.get("/api/flags", tags=["flags"])
    def api_flags(request: Request, who: ApiUser, page: Annotated[int, Query(ge=1, le=100_000)] = 1,
                  page_size: Annotated[int, Query(ge=1, le=500)] = service.PAGE_SIZE,
                  status: str = "pending", rule: str = "", severity: str = "", province: str = "", city: str = "",
                  county: str = "", mineral_class: str = "", licence_type: str = "", site_id: str = "",
                  date_from: str = "", date_to: str = "", stage: str = "", overdue: str = "") -> dict[str, Any]:
        """The queue: flags most severe first, then oldest; filters as on the /flags page (``stage``:
        county, city or province, the level of the pending escalation stage, or complete; ``overdue``:
        yes). Each item's ``stage``: where it stands on its escalation chain (state, number, level,
        action, due_at, overdue)."""
        result = service.queue(store, queue_filter(request), page, page_size, scope(who), rules=rules, now=now())
        return {"items": result.items, "total": result.total, "page": result.page, "pages": result.pages,
                "counts": result.counts}

    @app.get("/api/flags/{flag_id}", tags=["flags"])
    def api_flag(flag_id: FlagId, who: ApiUser) -> dict[str, Any]:
        """One flag with its evidence, its patch and its decision history."""
        sc = scope(who)
        flag, site, patch = service.get_flag(store, flag_id, sc)
        out = service.flag_summary(flag, site, patch)
        out["evidence"] = flag.evidence
        out["patch"] = None if patch is None else {
            k: getattr(patch, k) for k in ("patch_id", "disturbance_class", "confidence", "first_detected",
                                           "confirmed_on", "last_seen", "area_m2", "inside_licence",
                                           "area_outside_m2", "recovery_status", "recovery_ratio", "geometry_wkt")}
        out["history"] = [_review_json(r) for r in service.history(store, flag_id, sc)]
        return out

    @app.post("/api/flags/{flag_id}/decision", tags=["flags"])
    def api_decide(flag_id: FlagId, body: Decision, who: ApiUser,
                   x_csrf_token: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Decide a flag (reviewers and admins); needs the ``X-CSRF-Token`` header from /api/me."""
        user, session = who
        check_csrf(session, x_csrf_token)
        service.get_flag(store, flag_id, scope(who))
        row = service.decide(store, flag_id, user, body.decision, body.reason, body.comment, body.corrected_class,
                             rules=rules, now=now())
        return _review_json(row)

    @app.get("/api/flags/{flag_id}/chain", tags=["escalation"])
    def api_chain(flag_id: FlagId, who: ApiUser) -> dict[str, Any]:
        """A flag's escalation chain: its stages (level, role, deadline, state, who signed or returned it
        and why), the pending one, whether it is overdue, the stage log, and ``may_act``: the stage
        number the logged-in user may sign or return now (null if none; ``blocked_by``: the stage
        they acted on, when separation of duties keeps them from the pending one)."""
        chain = escalation.get_chain(store, flag_id, scope(who), rules, now())
        return {**chain.as_json(), "may_act": _stage_actor(chain, who[0])}

    @app.post("/api/flags/{flag_id}/stages/{number}/{action}", tags=["escalation"])
    def api_stage(flag_id: FlagId, number: Annotated[int, PathParam(ge=1, le=100)], action: str, body: StageAction,
                  who: ApiUser, x_csrf_token: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Sign or return (``action``) stage ``number`` (1 = the first) of a flag's chain; needs the
        ``X-CSRF-Token`` header from /api/me. 404: the flag is not in your scope (or missing); 403: the
        stage is not for your role and level, or you acted on another stage of this flag; 409: it is not
        the pending stage (signed already, not reached, the chain closed); 400: a return without a reason."""
        user, session = who
        check_csrf(session, x_csrf_token)
        if action not in escalation.ACTIONS:
            raise HTTPException(404, "stage actions: sign, return")
        service.get_flag(store, flag_id, scope(who))
        row = escalation.act(store, flag_id, user, number - 1, action, reason=body.reason, comment=body.comment,
                             rules=rules, now=now())
        return escalation.event_json(row)

    @app.get("/api/escalation/overdue", tags=["escalation"])
    def api_overdue(who: ApiUser, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """Pending stages past their deadline of the flags in your scope, longest overdue first."""
        found = escalation.pending_stages(store, scope(who), rules=rules, now=now(), overdue_only=True, limit=limit)
        return {"total": found.total, "items": found.items}

    @app.get("/api/escalation/awaiting", tags=["escalation"])
    def api_awaiting(who: ApiUser, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """Pending stages of flags in your scope at your level that your role may act on."""
        user = who[0]
        if not auth.can(user, "decide"):
            return {"total": 0, "items": []}
        found = escalation.pending_stages(store, scope(who), rules=rules, now=now(), level=user.scope_kind,
                                          role=user.role, limit=limit)
        return {"total": found.total, "items": found.items}

    @app.get("/api/sites/{site_id}", tags=["sites"])
    def api_site(site_id: str, who: ApiUser) -> dict[str, Any]:
        """A licence: its attributes, patches and flags."""
        site, patches, flags = service.get_site(store, site_id, scope(who))
        return {"site_id": site.site_id, "attrs": site.attrs,
                "patches": [{k: getattr(p, k) for k in ("patch_id", "disturbance_class", "area_m2", "first_detected",
                                                        "recovery_status", "recovery_ratio")} for p in patches],
                "flags": [{"id": f.id, "rule": f.rule, "severity": f.severity, "status": f.status} for f in flags]}

    @app.get("/api/audit", tags=["flags"])
    def api_audit(who: ApiUser,
                  flag_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> list[dict]:
        """The decision log, oldest first (append-only)."""
        return [_review_json(r) for r in service.history(store, flag_id, scope(who))]

    @app.get("/api/audit/escalation", tags=["escalation"])
    def api_audit_escalation(who: ApiUser,
                             flag_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> list[dict]:
        """The stage log (every sign and return), oldest first (append-only)."""
        return [escalation.event_json(e) for e in escalation.history(store, scope(who), flag_id)]

    @app.get("/api/export/{what}.{fmt}", tags=["exports"])
    def api_export(request: Request, what: str, fmt: str, who: ApiUser) -> Response:
        """Flags or patches matching the queue filters, as GeoJSON, GeoPackage or CSV."""
        return _export(request, what, fmt, scope(who))

    def _export(request: Request, what: str, fmt: str, sc: Scope) -> Response:
        """The rows stream from the database in batches (gmsense.review.exports), within ``sc``."""
        from starlette.background import BackgroundTask

        from gmsense.review import exports

        if what not in ("flags", "patches") or fmt not in EXPORT_FORMATS:
            raise HTTPException(404, "exports: /export/flags|patches.geojson|gpkg|csv")
        columns, rows = exports.batches(store, what, queue_filter(request), sc, rules=rules, now=now())
        headers = {"Content-Disposition": f'attachment; filename="gmsense-{what}.{fmt}"'}
        if fmt == "gpkg":
            path, remove = exports.write_gpkg(columns, rows, what)
            return FileResponse(path, media_type=EXPORT_FORMATS[fmt], headers=headers,
                                background=BackgroundTask(remove))
        stream = exports.stream_csv if fmt == "csv" else exports.stream_geojson
        return StreamingResponse(stream(columns, rows), media_type=EXPORT_FORMATS[fmt], headers=headers)

    assessment_routes.install(app, store, scope_of=scope, check_csrf=check_csrf, now=now)
    return app


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


#: The dashboard shows this many of the greenest and of the least green licences of a longer ranking.
RANKING_ENDS = 20


def _pct(value: Any) -> str:
    """A share 0-1 as a percentage, as the restoration report writes it ("-" when there is none)."""
    return "-" if value is None or value != value else f"{value:.1%}"


def _safe_next(target: str) -> str:
    """Only local paths: never redirect a user to another site after login."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/flags"
    return target


def _scans(store: Store, ids: set[int]) -> list[Any]:
    return [s for s in store.scans() if s.id in ids]


def _review_json(r: ReviewRow) -> dict[str, Any]:
    return {"id": r.id, "flag_id": r.flag_id, "username": r.username, "at": r.at.isoformat(timespec="seconds"),
            "decision": r.decision, "reason": r.reason, "comment": r.comment, "corrected_class": r.corrected_class,
            "previous_status": r.previous_status}
