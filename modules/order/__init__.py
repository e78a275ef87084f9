"""The order module. Only its contract is public."""

from modules.order.contract import *  # noqa: F403
from modules.order.contract import __all__ as __all__
