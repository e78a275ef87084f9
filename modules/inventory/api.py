"""HTTP routes of the inventory module: products, their price and stock."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, put
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from sqlmodel.ext.asyncio.session import AsyncSession

from bus.sqlite import Database
from modules.inventory.db import ProductRow
from modules.inventory.handlers import upsert_product
from web.auth import PUBLIC
from web.http import problems, strict_body
from web.limits import Cents, IdPath, Text

__all__ = ["ProductRequest", "ProductView", "inventory_routes"]


class ProductRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    price_cents: Cents
    stock: Cents


class ProductView(msgspec.Struct):
    sku: str
    name: str
    price_cents: int
    stock: int


def inventory_routes(db: Database) -> list[HTTPRouteHandler]:
    """Build the inventory routes over the module's database."""

    @put("/products/{sku:str}", operation_id="putProduct", tags=["products"])
    async def put_product(
        sku: IdPath, data: JSONBody[ProductRequest], request: Request[Any, Any, Any]
    ) -> ProductView:
        """Create a product or set its name, price and sellable stock."""
        data = await strict_body(request, ProductRequest)
        # The order module prices orders from its own copy of the catalog:
        # return once (in process) that copy has this product.
        await db.transact_delivered(
            lambda tx: upsert_product(tx, sku, data.name, data.price_cents, data.stock)
        )
        return ProductView(sku, data.name, data.price_cents, data.stock)

    @get("/products/{sku:str}", operation_id="getProduct", tags=["products"], opt=PUBLIC,
         responses=problems(404))  # fmt: skip
    async def get_product(sku: IdPath) -> ProductView:
        """Read a product; ``stock`` is what can still be sold."""
        async with AsyncSession(db.reader) as session:
            row = await session.get(ProductRow, sku)
        if row is None:
            raise NotFoundException(f"product {sku} not found")
        return ProductView(row.sku, row.name, row.price_cents, row.stock)

    return [put_product, get_product]
