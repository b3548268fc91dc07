"""Licences and registers: read, validate, repair, reproject; corner tables."""
