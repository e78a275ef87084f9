"""Payment accounts and the rules for charging and refunding. Pure: no I/O."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AccountStatus", "FailureReason", "PaymentStatus", "can_charge"]


class PaymentStatus(StrEnum):
    CHARGED = "CHARGED"
    REFUNDED = "REFUNDED"
    FAILED = "FAILED"
    # Refunded before any charge arrived: a late charge for the order is refused.
    VOIDED = "VOIDED"


class AccountStatus(StrEnum):
    OPEN = "open"
    # A closed account is neither charged nor refunded until it is open again.
    CLOSED = "closed"


class FailureReason(StrEnum):
    ACCOUNT_CLOSED = "account_closed"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    UNKNOWN_CUSTOMER = "unknown_customer"
    ALREADY_REFUNDED = "already_refunded"
    INJECTED_FAULT = "injected_fault"


def can_charge(balance_cents: int, amount_cents: int) -> bool:
    """An account is never overdrawn."""
    return 0 <= amount_cents <= balance_cents
