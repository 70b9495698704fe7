"""Presentation: what a notebook shows and saves, the report, the scan card and every plot."""
