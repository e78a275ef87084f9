"""HTTP routes of the payment module: customers' payment accounts."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get, put
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody, PathParameter
from sqlmodel.ext.asyncio.session import AsyncSession

from bus.sqlite import Database
from modules.payment.db import AccountRow
from modules.payment.handlers import upsert_account
from web.http import strict_body

__all__ = ["AccountRequest", "AccountView", "payment_routes"]


class AccountRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    balance_cents: Annotated[int, msgspec.Meta(ge=0, le=10**15)]


class AccountView(msgspec.Struct):
    customer_id: str
    name: str
    balance_cents: int


CustomerId = Annotated[
    str, PathParameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
]


def payment_routes(db: Database) -> list[HTTPRouteHandler]:
    """Build the payment routes over the module's database."""

    @put("/customers/{customer_id:str}", operation_id="putCustomer", tags=["customers"])
    async def put_customer(
        customer_id: CustomerId, data: JSONBody[AccountRequest], request: Request[Any, Any, Any]
    ) -> AccountView:
        """Open or update a customer's payment account and set its balance."""
        data = await strict_body(request, AccountRequest)
        # Read-your-writes for the caller's next order: the order module learns
        # of the customer before this returns (in process, at least).
        await db.transact_delivered(
            lambda tx: upsert_account(tx, customer_id, data.name, data.balance_cents)
        )
        return AccountView(customer_id, data.name, data.balance_cents)

    @get("/customers/{customer_id:str}", operation_id="getCustomer", tags=["customers"])
    async def get_customer(customer_id: FromPath[str]) -> AccountView:
        """Read a customer's payment account."""
        async with AsyncSession(db.reader) as session:
            row = await session.get(AccountRow, customer_id)
        if row is None:
            raise NotFoundException(f"customer {customer_id} not found")
        return AccountView(row.customer_id, row.name, row.balance_cents)

    return [put_customer, get_customer]
