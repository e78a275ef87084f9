"""A saga definition that breaks a rule is refused at start, with one line naming the step
and the rule: one test per rule, and one through the real command line."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from checkout import contract as checkout_contract
from checkout.definition import DefinitionError, Definitions, SagaDefinition, Step, StepKind
from checkout.flow import CHECKOUT, CONFIRM, ORDER, PAYMENT, SHIPPING, STOCK
from main import CHECKOUT_FLOW, Flow
from modules import inventory, order, payment, shipping

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = {
    "order": order.MESSAGES,
    "payment": payment.MESSAGES,
    "inventory": inventory.MESSAGES,
    "shipping": shipping.MESSAGES,
    "checkout": checkout_contract.MESSAGES,
}


def refused(*steps: Step) -> str:
    with pytest.raises(DefinitionError) as caught:
        SagaDefinition("checkout", 9, steps).validate(CONTRACTS)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_checkout_definition_keeps_every_rule() -> None:
    CHECKOUT.validate(CONTRACTS)
    assert CHECKOUT.pivot is CONFIRM


def test_a_step_name_used_twice_is_refused() -> None:
    twice = replace(STOCK, name="payment")
    assert refused(ORDER, PAYMENT, twice, SHIPPING, CONFIRM) == (
        "step 'payment': a step name is used twice"
    )


def test_a_definition_without_a_pivot_is_refused() -> None:
    assert "exactly one step must be the pivot (found none)" in refused(
        ORDER, PAYMENT, STOCK, SHIPPING
    )


def test_a_definition_with_two_pivots_is_refused() -> None:
    second = replace(SHIPPING, kind=StepKind.PIVOT, compensation=None, compensated=None)
    assert "exactly one step must be the pivot (found 'shipping', 'complete')" in refused(
        ORDER, PAYMENT, STOCK, second, CONFIRM
    )


def test_a_step_before_the_pivot_must_be_compensatable() -> None:
    retriable = replace(STOCK, kind=StepKind.RETRIABLE)
    assert refused(ORDER, PAYMENT, retriable, SHIPPING, CONFIRM) == (
        "step 'stock': a step before the pivot must be compensatable"
    )


def test_a_step_before_the_pivot_needs_a_compensation() -> None:
    bare = replace(STOCK, compensation=None, compensated=None)
    assert refused(ORDER, PAYMENT, bare, SHIPPING, CONFIRM) == (
        "step 'stock': a step before the pivot needs a compensation and its reply"
    )


def test_a_step_after_the_pivot_must_be_retriable() -> None:
    assert refused(ORDER, PAYMENT, STOCK, CONFIRM, SHIPPING) == (
        "step 'shipping': a step after the pivot must be retriable"
    )


def test_a_step_after_the_pivot_may_not_fail() -> None:
    after = replace(SHIPPING, kind=StepKind.RETRIABLE, compensation=None, compensated=None)
    assert refused(ORDER, PAYMENT, STOCK, CONFIRM, after) == (
        "step 'shipping': a step after the pivot may not fail"
    )


def test_a_step_after_the_pivot_has_no_compensation() -> None:
    after = replace(SHIPPING, kind=StepKind.RETRIABLE, failed=())
    assert refused(ORDER, PAYMENT, STOCK, CONFIRM, after) == (
        "step 'shipping': only a step before the pivot may have a compensation"
    )


def test_the_pivot_needs_a_lock() -> None:
    assert refused(ORDER, PAYMENT, STOCK, SHIPPING, replace(CONFIRM, lock=None)) == (
        "step 'complete': the pivot needs a lock command"
    )


def test_the_pivot_needs_a_failure_reply() -> None:
    assert refused(ORDER, PAYMENT, STOCK, SHIPPING, replace(CONFIRM, failed=())) == (
        "step 'complete': the pivot needs a failure reply (what its lock answers)"
    )


def test_only_the_pivot_takes_a_lock() -> None:
    locked = replace(STOCK, lock=CONFIRM.lock)
    assert refused(ORDER, PAYMENT, locked, SHIPPING, CONFIRM) == (
        "step 'stock': only the pivot takes a lock"
    )


def test_the_first_step_has_no_action() -> None:
    acting = replace(ORDER, action=CONFIRM.action)
    assert "step 'order': the first step is run by its module" in refused(
        acting, PAYMENT, STOCK, SHIPPING, CONFIRM
    )


def test_every_later_step_needs_an_action() -> None:
    assert refused(ORDER, replace(PAYMENT, action=None), STOCK, SHIPPING, CONFIRM) == (
        "step 'payment': every step but the first needs an action"
    )


def test_a_failure_reply_must_carry_a_reason() -> None:
    # (The type checker refuses this too; the rule catches definitions it never saw.)
    plain = replace(
        STOCK,
        failed=(inventory.StockReserved,),  # type: ignore[arg-type]
        succeeded=inventory.StockReleased,
    )
    message = refused(ORDER, PAYMENT, plain, SHIPPING, CONFIRM)
    assert message.startswith("step 'stock': failure reply inventory.StockReserved must be")


def test_a_compensation_reply_must_pass_the_reason_on() -> None:
    plain = replace(STOCK, compensated=inventory.ProductUpdated)
    message = refused(ORDER, PAYMENT, plain, SHIPPING, CONFIRM)
    assert message.startswith("step 'stock': compensation reply inventory.ProductUpdated")


def test_a_step_of_an_unknown_module_is_refused() -> None:
    assert refused(ORDER, replace(PAYMENT, module="billing"), STOCK, SHIPPING, CONFIRM) == (
        "step 'payment': no module named 'billing'"
    )


def test_every_message_type_must_be_in_the_named_modules_contract() -> None:
    misplaced = replace(STOCK, module="shipping")
    assert refused(ORDER, PAYMENT, misplaced, SHIPPING, CONFIRM) == (
        "step 'stock': action inventory.ReserveStock is not in the 'shipping' module's contract"
    )


def test_an_action_must_be_a_command() -> None:
    wrong = replace(STOCK, succeeded=inventory.ReleaseStock)  # type: ignore[arg-type]
    message = refused(ORDER, PAYMENT, wrong, SHIPPING, CONFIRM)
    assert message == "step 'stock': succeeded inventory.ReleaseStock must be a Event"


def test_a_message_type_plays_one_part() -> None:
    again = replace(PAYMENT, succeeded=payment.PaymentRefunded)
    message = refused(ORDER, again, STOCK, SHIPPING, CONFIRM)
    assert message.startswith("step 'payment': message type payment.PaymentRefunded already")


def test_two_definitions_of_one_version_are_refused() -> None:
    with pytest.raises(DefinitionError, match="a version is defined twice"):
        Definitions(current=CHECKOUT, older=(CHECKOUT,))


BROKEN = Flow(
    Definitions(
        current=SagaDefinition("checkout", 2, (ORDER, PAYMENT, STOCK, SHIPPING)),
        older=CHECKOUT_FLOW.definitions.all,
    )
)


def test_the_app_refuses_to_start_with_one_line_naming_the_rule(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "main.py", "--data-dir", str(tmp_path), "--port", "0",
         "--flow", "tests.test_saga_definition:BROKEN"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "saga definition refused: saga 'checkout' v2: exactly one step must be the pivot"
        " (found none)"
    ]
