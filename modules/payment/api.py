"""HTTP routes of the payment module: customers' payment accounts."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, patch, put
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from sqlmodel.ext.asyncio.session import AsyncSession

from bus.sqlite import Database
from modules.payment.db import AccountRow
from modules.payment.domain import AccountStatus
from modules.payment.handlers import set_account_status, upsert_account
from web.http import problems, strict_body
from web.limits import Cents, IdPath, Text

__all__ = ["AccountRequest", "AccountView", "payment_routes"]


class AccountRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    balance_cents: Cents
    status: AccountStatus = AccountStatus.OPEN


class AccountView(msgspec.Struct):
    customer_id: str
    name: str
    balance_cents: int
    status: AccountStatus


class AccountStatusRequest(msgspec.Struct, forbid_unknown_fields=True):
    status: AccountStatus


def payment_routes(db: Database) -> list[HTTPRouteHandler]:
    """Build the payment routes over the module's database."""

    @put("/customers/{customer_id:str}", operation_id="putCustomer", tags=["customers"])
    async def put_customer(
        customer_id: IdPath, data: JSONBody[AccountRequest], request: Request[Any, Any, Any]
    ) -> AccountView:
        """Open or update a customer's payment account and set its balance."""
        data = await strict_body(request, AccountRequest)
        # Read-your-writes for the caller's next order: the order module learns
        # of the customer before this returns (in process, at least).
        await db.transact_delivered(
            lambda tx: upsert_account(tx, customer_id, data.name, data.balance_cents, data.status)
        )
        return AccountView(customer_id, data.name, data.balance_cents, data.status)

    @patch("/customers/{customer_id:str}", operation_id="patchCustomer", tags=["customers"],
           responses=problems(404))  # fmt: skip
    async def patch_customer(
        customer_id: IdPath,
        data: JSONBody[AccountStatusRequest],
        request: Request[Any, Any, Any],
    ) -> AccountView:
        """Open or close a customer's account; only its status changes, never its balance.

        A closed account is neither charged nor refunded: a refund waits (and its saga
        may park) until the account is open again.
        """
        data = await strict_body(request, AccountStatusRequest)
        found = await db.transact(lambda tx: set_account_status(tx, customer_id, data.status))
        if found is None:
            raise NotFoundException(f"customer {customer_id} not found")
        return AccountView(customer_id, found[0], found[1], data.status)

    @get("/customers/{customer_id:str}", operation_id="getCustomer", tags=["customers"],
         responses=problems(404))  # fmt: skip
    async def get_customer(customer_id: IdPath) -> AccountView:
        """Read a customer's payment account."""
        async with AsyncSession(db.reader) as session:
            row = await session.get(AccountRow, customer_id)
        if row is None:
            raise NotFoundException(f"customer {customer_id} not found")
        status = AccountStatus(row.status or AccountStatus.OPEN)
        return AccountView(row.customer_id, row.name, row.balance_cents, status)

    return [put_customer, patch_customer, get_customer]
