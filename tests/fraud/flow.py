"""Checkout v2: a fraud check between payment and stock, kept beside v1."""

from __future__ import annotations

from checkout.definition import Definitions, SagaDefinition, Send, Step, StepKind, Undo
from checkout.flow import CHECKOUT, CONFIRM, ORDER, PAYMENT, SHIPPING, STOCK
from main import Flow, Participant
from tests.fraud import contract as fraud
from tests.fraud import module

__all__ = ["CHECKOUT_V2", "FLOW", "FRAUD", "V2_ONLY"]

FRAUD = Step(
    name="fraud",
    module="fraud",
    kind=StepKind.COMPENSATABLE,
    action=Send(
        fraud.CheckFraud,
        lambda o: fraud.CheckFraud(
            order_id=o.order_id, customer_id=o.customer_id, amount_cents=o.total_cents
        ),
    ),
    succeeded=fraud.FraudCleared,
    failed=(fraud.FraudSuspected,),
    compensation=Undo(
        fraud.RevokeClearance,
        lambda o, why: fraud.RevokeClearance(order_id=o.order_id, reason=why),
    ),
    compensated=fraud.ClearanceRevoked,
)

CHECKOUT_V2 = SagaDefinition(
    "checkout", CHECKOUT.version + 1, (ORDER, PAYMENT, FRAUD, STOCK, SHIPPING, CONFIRM)
)

FLOW = Flow(
    Definitions(current=CHECKOUT_V2, older=(CHECKOUT,)),
    participants=(Participant("fraud", fraud.MESSAGES, module.build),),
)

V2_ONLY = Flow(Definitions(current=CHECKOUT_V2), participants=FLOW.participants)
"""v2 without v1: refused while v1 sagas are in flight."""
