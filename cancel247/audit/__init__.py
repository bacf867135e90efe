"""The SQL audit store: models, engines, writes and queries."""

from cancel247.audit.models import Attempt, Base, CancelRequest, RequestStatus, TERMINAL_STATUSES
from cancel247.audit.store import AuditStore, AuditUnavailable, Claim, NewRequest

__all__ = [
    "Attempt",
    "AuditStore",
    "AuditUnavailable",
    "Base",
    "CancelRequest",
    "Claim",
    "NewRequest",
    "RequestStatus",
    "TERMINAL_STATUSES",
]
