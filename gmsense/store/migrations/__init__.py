"""Alembic migrations of the results store (run by Store.create; upgrading never drops data)."""
