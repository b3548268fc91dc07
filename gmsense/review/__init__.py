"""The regulators\x27 review app (see gmsense.review.app)."""


class NotFoundError(LookupError):
    """An id that is not in the store, or not in the user's scope (the app answers 404 alike)."""
