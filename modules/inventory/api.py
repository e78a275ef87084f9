"""HTTP routes of the inventory module: products, their price and stock."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get, put
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody, PathParameter
from sqlmodel.ext.asyncio.session import AsyncSession

from bus.sqlite import Database
from modules.inventory.db import ProductRow
from modules.inventory.handlers import upsert_product
from web.http import strict_body

__all__ = ["ProductRequest", "ProductView", "inventory_routes"]

Sku = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class ProductRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    price_cents: Annotated[int, msgspec.Meta(ge=0, le=10**12)]
    stock: Annotated[int, msgspec.Meta(ge=0, le=10**12)]


class ProductView(msgspec.Struct):
    sku: str
    name: str
    price_cents: int
    stock: int


def inventory_routes(db: Database) -> list[HTTPRouteHandler]:
    """Build the inventory routes over the module's database."""

    @put("/products/{sku:str}", operation_id="putProduct", tags=["products"])
    async def put_product(
        sku: Sku, data: JSONBody[ProductRequest], request: Request[Any, Any, Any]
    ) -> ProductView:
        """Create a product or set its name, price and sellable stock."""
        data = await strict_body(request, ProductRequest)
        # The order module prices orders from its own copy of the catalog:
        # return once (in process) that copy has this product.
        await db.transact_delivered(
            lambda tx: upsert_product(tx, sku, data.name, data.price_cents, data.stock)
        )
        return ProductView(sku, data.name, data.price_cents, data.stock)

    @get("/products/{sku:str}", operation_id="getProduct", tags=["products"])
    async def get_product(sku: FromPath[str]) -> ProductView:
        """Read a product; ``stock`` is what can still be sold."""
        async with AsyncSession(db.reader) as session:
            row = await session.get(ProductRow, sku)
        if row is None:
            raise NotFoundException(f"product {sku} not found")
        return ProductView(row.sku, row.name, row.price_cents, row.stock)

    return [put_product, get_product]
