"""Shipments and where we ship to. Pure: no I/O."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEFAULT_COUNTRIES", "FailureReason", "ShipmentStatus", "parse_countries"]

# The documented default: EU/EEA members we ship to, plus CH, GB, US and CA.
DEFAULT_COUNTRIES = frozenset(
    {"AT", "BE", "CA", "CH", "CZ", "DE", "DK", "ES", "FI", "FR"}
    | {"GB", "IE", "IT", "LU", "NL", "NO", "PL", "PT", "SE", "US"}
)


class ShipmentStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    # Cancelled before any shipment was scheduled: a late request is refused.
    VOIDED = "VOIDED"


class FailureReason(StrEnum):
    COUNTRY_NOT_SERVED = "country_not_served"
    ALREADY_CANCELLED = "already_cancelled"
    INJECTED_FAULT = "injected_fault"


def parse_countries(spec: str | None) -> frozenset[str]:
    """Parse ``DE,FR,NL``; empty means the default list."""
    if not spec:
        return DEFAULT_COUNTRIES
    countries = frozenset(code.strip().upper() for code in spec.split(",") if code.strip())
    bad = sorted(code for code in countries if len(code) != 2 or not code.isalpha())
    if bad:
        raise ValueError(f"not ISO 3166-1 alpha-2 country codes: {', '.join(bad)}")
    return countries
