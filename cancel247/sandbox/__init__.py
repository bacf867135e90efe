"""A local stand-in for the carrier's API, for tests, demos and integration work."""

from cancel247.sandbox.server import (
    DEFAULT_CLIENT_ID,
    DEFAULT_PASSWORD,
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    FaultRates,
    Sandbox,
    SandboxState,
    validate_fault,
)

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_PASSWORD",
    "DEFAULT_TOKEN",
    "DEFAULT_USERNAME",
    "FaultRates",
    "Sandbox",
    "SandboxState",
    "validate_fault",
]
