"""Dashboards layer: reads a sweep's results store, writes one self-contained plotly HTML page.

Imports nothing of the service layer (no Ray): `write_dashboard` is cheap enough for the sweep
service to call after every finished trial.
"""
from .page import render_html, write_dashboard

__all__ = ["render_html", "write_dashboard"]
