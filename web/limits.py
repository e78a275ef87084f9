"""The input limits of the HTTP API, declared once as types.

They are msgspec ``Meta`` constraints (for bodies) and Litestar parameter
constraints (for paths, queries and headers), so they are both enforced at the
edge (a value outside them is a 400 naming the field, before anything is
written) and written into the OpenAPI schema.

Patterns end in ``$(?!\\n)``: msgspec checks them with ``re.search``, where a
bare ``$`` would also match before a trailing newline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from litestar.params import HeaderParameter, PathParameter

__all__ = [
    "COUNTRY_CODES",
    "ID_PATTERN",
    "MAX_BODY_BYTES",
    "MAX_CENTS",
    "MAX_LINES",
    "MAX_QUANTITY",
    "MAX_WAIT",
    "TEXT_PATTERN",
    "Cents",
    "Country",
    "Id",
    "IdPath",
    "IdempotencyKey",
    "Prefer",
    "Quantity",
    "Text",
]

MAX_BODY_BYTES = 64 * 1024
MAX_LINES = 100
MAX_QUANTITY = 1000
MAX_CENTS = 10**12
MAX_ID = 64
MAX_TEXT = 200
MAX_KEY = 200

ID_PATTERN = r"^[A-Za-z0-9._-]+$(?!\n)"
# Printable: no C0 or C1 control character, no DEL (letters of every script are fine).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$(?!\n)"
# Visible ASCII, as RFC 9110 allows in a token-like header value.
KEY_PATTERN = r"^[\x21-\x7e]+$(?!\n)"

# ISO 3166-1 alpha-2, every officially assigned code (249).
COUNTRY_CODES = (  # noqa: SIM905 - a table reads (and checks) better as text
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR"
    " BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ"
    " EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW"
    " GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY"
    " KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV"
    " MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY"
    " QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG"
    " TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM"
    " ZW"
).split()

Id = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_ID,
        pattern=ID_PATTERN,
        description=f"1..{MAX_ID} characters of [A-Za-z0-9._-]",
    ),
]
Text = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_TEXT,
        pattern=TEXT_PATTERN,
        description=f"1..{MAX_TEXT} printable characters",
    ),
]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
Cents = Annotated[int, msgspec.Meta(ge=0, le=MAX_CENTS, description="0..10^12 cents")]
if TYPE_CHECKING:
    Country = str
else:
    # An enum in the schema; a Literal built from the table (mypy sees a str).
    Country = Annotated[
        Literal[tuple(COUNTRY_CODES)],
        msgspec.Meta(description="ISO 3166-1 alpha-2 country code"),
    ]

MAX_WAIT = 60
"""The longest an HTTP request may be held for an order to end, in seconds."""
Prefer = Annotated[
    str | None,
    HeaderParameter(
        name="Prefer",
        max_length=256,
        description=f"RFC 7240; 'wait=N' holds the response up to N (<= {MAX_WAIT}) seconds"
        " until the order is COMPLETED or CANCELLED",
    ),
]

IdPath = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=MAX_ID,
        pattern=ID_PATTERN,
        description=f"1..{MAX_ID} characters of [A-Za-z0-9._-]",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY,
        pattern=KEY_PATTERN,
        description=f"1..{MAX_KEY} visible ASCII characters; the same key and body give"
        " back the same order",
    ),
]
