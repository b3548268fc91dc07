"""The regulators\x27 review app (see gmsense.review.app)."""
