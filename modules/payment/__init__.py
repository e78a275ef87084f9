"""The payment module. Only its contract is public."""

from modules.payment.contract import *  # noqa: F403
from modules.payment.contract import __all__ as __all__
