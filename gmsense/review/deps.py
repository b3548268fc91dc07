"""What the review app's route modules share (gmsense.review.app, gmsense.review.assessment_routes): the
logged-in user of a page or an API call, as FastAPI dependencies, and ids in URL paths."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam

from gmsense.review import auth
from gmsense.store import UserRow

SESSION_COOKIE = "gmsense_session"
#: The largest id a database integer holds; a larger one in a URL is a 404, not an overflow.
MAX_ID = 2**63 - 1
#: A flag id in a URL path.
FlagId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class LoginRequiredError(Exception):
    """A page asked for by an anonymous visitor: redirect to /login."""


def current_user(request: Request) -> tuple[UserRow, Any] | None:
    """The active user and session of the request's session cookie, or None."""
    return auth.session_user(request.app.state.store, request.cookies.get(SESSION_COOKIE))


def _page_user(request: Request) -> tuple[UserRow, Any]:
    found = current_user(request)
    if found is None:
        raise LoginRequiredError()
    return found


def _api_user(request: Request) -> tuple[UserRow, Any]:
    found = current_user(request)
    if found is None:
        raise HTTPException(401, "log in first (POST /login)")
    return found


#: The logged-in user and session of a page (anonymous visitors go to /login) or an API call (401).
PageUser = Annotated[tuple[UserRow, Any], Depends(_page_user)]
ApiUser = Annotated[tuple[UserRow, Any], Depends(_api_user)]
