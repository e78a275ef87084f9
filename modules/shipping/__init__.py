"""The shipping module. Only its contract is public."""

from modules.shipping.contract import *  # noqa: F403
from modules.shipping.contract import __all__ as __all__
