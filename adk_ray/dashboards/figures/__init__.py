"""Plotly figure builders: data in, a plotly figure dict (grid.Grid) out; no HTML here."""
