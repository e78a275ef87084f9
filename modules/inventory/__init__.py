"""The inventory module. Only its contract is public."""

from modules.inventory.contract import *  # noqa: F403
from modules.inventory.contract import __all__ as __all__
