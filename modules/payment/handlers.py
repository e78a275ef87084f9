"""The payment module's handlers: each runs inside one local transaction."""

from __future__ import annotations

from bus.sqlite import Tx
from modules.faults import StepFaults
from modules.payment.contract import (
    CustomerUpdated,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    ProcessPayment,
    RefundFailed,
    RefundPayment,
)
from modules.payment.domain import AccountStatus, FailureReason, PaymentStatus, can_charge

__all__ = ["process_payment", "refund_payment", "set_account_status", "upsert_account"]


def process_payment(tx: Tx, command: ProcessPayment, faults: StepFaults) -> None:
    """Charge the order's amount at most once; a repeat gets the first outcome again."""
    order_id, customer_id, amount = command.order_id, command.customer_id, command.amount_cents
    row = tx.one("SELECT status, reason FROM payments WHERE order_id = ?", (order_id,))
    if row is not None:
        status, reason = PaymentStatus(row[0]), row[1]
        if status is PaymentStatus.CHARGED:
            tx.emit(
                PaymentCompleted(order_id=order_id, customer_id=customer_id, amount_cents=amount)
            )
        else:
            if status is not PaymentStatus.FAILED:
                reason = FailureReason.ALREADY_REFUNDED
            tx.emit(
                PaymentFailed(
                    order_id=order_id, customer_id=customer_id, amount_cents=amount, reason=reason
                )
            )
        return
    account = tx.one(
        "SELECT balance_cents, status FROM accounts WHERE customer_id = ?", (customer_id,)
    )
    failure: FailureReason | None = None
    if faults.fails(order_id):
        failure = FailureReason.INJECTED_FAULT
    elif account is None:
        failure = FailureReason.UNKNOWN_CUSTOMER
    elif account[1] == AccountStatus.CLOSED:
        failure = FailureReason.ACCOUNT_CLOSED
    elif not can_charge(account[0], amount):
        failure = FailureReason.INSUFFICIENT_FUNDS
    status = PaymentStatus.FAILED if failure else PaymentStatus.CHARGED
    tx.execute(
        "INSERT INTO payments (order_id, customer_id, amount_cents, status, reason, created_at,"
        " updated_at) VALUES (?,?,?,?,?,?,?)",
        (order_id, customer_id, amount, status, failure, tx.now, tx.now),
    )
    if failure is not None:
        tx.emit(
            PaymentFailed(
                order_id=order_id, customer_id=customer_id, amount_cents=amount, reason=failure
            )
        )
        return
    tx.execute(
        "UPDATE accounts SET balance_cents = balance_cents - ? WHERE customer_id = ?",
        (amount, customer_id),
    )
    tx.execute(
        "INSERT INTO ledger (order_id, customer_id, kind, amount_cents, at) VALUES (?,?,?,?,?)",
        (order_id, customer_id, "CHARGE", amount, tx.now),
    )
    tx.emit(PaymentCompleted(order_id=order_id, customer_id=customer_id, amount_cents=amount))


def refund_payment(tx: Tx, command: RefundPayment) -> None:
    """Give back what was charged for the order, once; with no charge, void the order's payment."""
    order_id = command.order_id
    row = tx.one(
        "SELECT status, customer_id, amount_cents FROM payments WHERE order_id = ?", (order_id,)
    )
    if row is None:
        tx.execute(
            "INSERT INTO payments (order_id, customer_id, amount_cents, status, created_at,"
            " updated_at) VALUES (?,?,?,?,?,?)",
            (order_id, None, 0, PaymentStatus.VOIDED, tx.now, tx.now),
        )
        tx.emit(
            PaymentRefunded(
                order_id=order_id, customer_id=None, amount_cents=0, reason=command.reason
            )
        )
        return
    status, customer_id, amount = PaymentStatus(row[0]), row[1], row[2]
    if status is PaymentStatus.CHARGED and _closed(tx, customer_id):
        tx.emit(
            RefundFailed(
                order_id=order_id, customer_id=customer_id, reason=FailureReason.ACCOUNT_CLOSED
            )
        )
        return
    if status is PaymentStatus.CHARGED:
        tx.execute(
            "UPDATE accounts SET balance_cents = balance_cents + ? WHERE customer_id = ?",
            (amount, customer_id),
        )
        tx.execute(
            "UPDATE payments SET status = ?, updated_at = ? WHERE order_id = ?",
            (PaymentStatus.REFUNDED, tx.now, order_id),
        )
        tx.execute(
            "INSERT INTO ledger (order_id, customer_id, kind, amount_cents, at) VALUES (?,?,?,?,?)",
            (order_id, customer_id, "REFUND", amount, tx.now),
        )
        status = PaymentStatus.REFUNDED
    refunded = amount if status is PaymentStatus.REFUNDED else 0
    tx.emit(
        PaymentRefunded(
            order_id=order_id, customer_id=customer_id, amount_cents=refunded, reason=command.reason
        )
    )


def _closed(tx: Tx, customer_id: str) -> bool:
    row = tx.one("SELECT status FROM accounts WHERE customer_id = ?", (customer_id,))
    return row is not None and row[0] == AccountStatus.CLOSED


def upsert_account(
    tx: Tx,
    customer_id: str,
    name: str,
    balance_cents: int,
    status: AccountStatus = AccountStatus.OPEN,
) -> CustomerUpdated:
    """Open or update a customer's account (an operator's action: it sets the balance)."""
    tx.execute(
        "INSERT INTO accounts (customer_id, name, balance_cents, status) VALUES (?,?,?,?)"
        " ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name,"
        " balance_cents = excluded.balance_cents, status = excluded.status",
        (customer_id, name, balance_cents, status),
    )
    event = CustomerUpdated(customer_id=customer_id, name=name)
    tx.emit(event)
    return event


def set_account_status(tx: Tx, customer_id: str, status: AccountStatus) -> tuple[str, int] | None:
    """Open or close an account, leaving its balance alone; its name and balance, or None."""
    row = tx.one("SELECT name, balance_cents FROM accounts WHERE customer_id = ?", (customer_id,))
    if row is not None:
        tx.execute("UPDATE accounts SET status = ? WHERE customer_id = ?", (status, customer_id))
    return None if row is None else (str(row[0]), int(row[1]))
