"""Protocol-neutral detection engine: Arrow in, findings out. Never imports gRPC."""
from __future__ import annotations

from .detector import Detector, MethodInfo, build_detectors, register, registered_methods
from .errors import AlreadyExists, BadRepository, DqdError, InvalidInput, NotFound, NotReady, TooLarge
from .findings import FINDINGS_SCHEMA
from .hits import HITS_SCHEMA, make_hits
from .pipeline import DEFAULT_METHODS, Engine, Plan
from .stream import BatchResult, StreamSession, Summary

__all__ = [
    "DEFAULT_METHODS",
    "FINDINGS_SCHEMA",
    "HITS_SCHEMA",
    "AlreadyExists",
    "BadRepository",
    "BatchResult",
    "Detector",
    "DqdError",
    "Engine",
    "InvalidInput",
    "MethodInfo",
    "NotFound",
    "NotReady",
    "Plan",
    "StreamSession",
    "Summary",
    "TooLarge",
    "build_detectors",
    "make_hits",
    "register",
    "registered_methods",
]
