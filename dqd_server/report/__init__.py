"""The self-contained HTML report, shared with the client library (``dqd_client.render_report``)."""
from __future__ import annotations

from dqd_client._report import render_report, report_data

__all__ = ["render_report", "report_data"]
