"""The self-contained HTML report of findings and evaluations (``html.render_report``)."""
from __future__ import annotations

from .html import render_report, report_data

__all__ = ["render_report", "report_data"]
