"""The 247Express customer API: client, error codes and reply classification."""

from cancel247.carrier.client import CarrierClient, Credentials
from cancel247.carrier.errors import (
    CATALOGUE,
    CarrierError,
    CarrierReply,
    CarrierReplyError,
    FinalError,
    LoginError,
    Outcome,
    RetryableError,
)

__all__ = [
    "CATALOGUE",
    "CarrierClient",
    "CarrierError",
    "CarrierReply",
    "CarrierReplyError",
    "Credentials",
    "FinalError",
    "LoginError",
    "Outcome",
    "RetryableError",
]
