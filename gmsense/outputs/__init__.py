"""Exports, figures, site / summary reports and their languages."""
