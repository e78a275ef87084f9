"""The dashboard as an operator uses it: Debian's Chromium, driven by Playwright.

The app runs as a real process over one data directory, in three runs:
1. orders that complete and orders that compensate (no carrier for AQ);
2. with refunds broken and compensations tried once: an order whose saga parks;
3. with shipping broken (an injected exception on every delivery, no retries):
   two orders whose shipping message dies, so their sagas wait, stuck;
4. the faults fixed (a restart without them): in the browser, find the sagas,
   filter the stuck ones, open one, discard its dead letter and abort it (it
   compensates); replay the other's dead letter (it completes); resolve the
   parked saga with a note. Health and the
   offline API docs are checked on the way. Each page is saved as a screenshot
   under ``tests/artifacts/dashboard-<style>/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

from tests.process import AppProcess
from tests.support import final_order, order_body, place, seed, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
# Without the networking flags Chromium keeps trying to reach the internet.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TOKEN = "test-admin-token"
# The message each style's shipping consumer handles: the orchestrator's command,
# or in choreography the event that shipping reacts to.
SHIPPING_INPUT = {
    "orchestration": "shipping.ScheduleShipment",
    "choreography": "inventory.StockReserved",
}
# ... and the one whose handler refunds the payment when a saga is undone.
REFUND_INPUT = {
    "orchestration": "payment.RefundPayment",
    "choreography": "inventory.StockReleased",
}
NOTE = "refunded by hand in the payment provider's console"
WAIT_MS = 30_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail("no /usr/bin/chromium: .ci/run runs scripts/browser.sh ensure first")
        pytest.skip("no /usr/bin/chromium (scripts/browser.sh ensure installs it)")
    # A loaded CI machine: every wait on the page gets the same generous deadline.
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


class Shots:
    def __init__(self, page: Page, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self.page = page
        self.directory = directory

    async def take(self, name: str) -> None:
        await self.page.screenshot(path=self.directory / f"{name}.png", full_page=True)


async def _orders_in_three_runs(app: AppProcess, saga_mode: str) -> dict[str, Any]:
    """Run 1: three complete, two compensate. Run 2 (refunds broken, compensations tried
    once): one parks. Run 3 (shipping broken): two get stuck."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    app.start()
    await app.wait_healthy()
    async with httpx.AsyncClient(base_url=app.url, headers=headers, timeout=30) as client:
        await seed(client, {"sku-1": (1250, 100), "sku-2": (800, 100)}, {"ada": 10**7})
        good = [await place(client, order_body("ada", {"sku-1": 1, "sku-2": n})) for n in (1, 2, 3)]
        bad = [await place(client, order_body("ada", {"sku-2": 1}, country="AQ")) for _ in "ab"]
        for order_id in good + bad:
            await final_order(client, order_id)
    app.stop()

    app.start(
        "--chaos", f"{REFUND_INPUT[saga_mode]}:exception=1.0",
        "--timeouts", "step=1,attempts=1,undo=1,saga=3600",
    )  # fmt: skip
    await app.wait_healthy()
    async with httpx.AsyncClient(base_url=app.url, headers=headers, timeout=30) as client:
        parked = await place(client, order_body("ada", {"sku-2": 1}, country="AQ"))

        async def is_parked() -> bool:
            rows = (await client.get("/sagas", params={"status": "PARKED"})).json()
            return [row["order_id"] for row in rows] == [parked]

        await wait_for(is_parked, deadline=60, what="a parked saga")
    app.stop()

    app.start("--chaos", f"{SHIPPING_INPUT[saga_mode]}:exception=1.0")
    await app.wait_healthy()
    async with httpx.AsyncClient(base_url=app.url, headers=headers, timeout=30) as client:
        stuck = [await place(client, order_body("ada", {"sku-1": 1})) for _ in "xy"]

        async def both_dead_and_stuck() -> bool:
            dead = (await client.get("/dead-letters")).json()
            shipping = [d for d in dead if d["type"] == SHIPPING_INPUT[saga_mode]]
            late = (await client.get("/sagas", params={"status": "STUCK"})).json()
            return len(shipping) == 2 and {s["order_id"] for s in late} == set(stuck)

        await wait_for(both_dead_and_stuck, deadline=60, what="two dead letters, two stuck sagas")
    app.stop()
    return {"good": good, "bad": bad, "parked": parked, "stuck": stuck}


async def _confirming(page: Page, dialogs: list[str]) -> None:
    async def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.accept(NOTE if dialog.type == "prompt" else "")

    page.on("dialog", accept)


@pytest.mark.parametrize("saga_mode", ["orchestration", "choreography"])
async def test_an_operator_finds_filters_aborts_and_replays_in_the_dashboard(
    tmp_path: Path, saga_mode: str, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGA_ADMIN_TOKEN", TOKEN)
    app = AppProcess(
        tmp_path / "data", tmp_path / "app.log", "--saga", saga_mode, "--retry", "attempts=1",
        "--timeouts", "step=600,attempts=3,saga=3600", "--stuck-after", "2",
    )  # fmt: skip
    try:
        orders = await _orders_in_three_runs(app, saga_mode)
        app.start()  # the fault is fixed
        await app.wait_healthy()
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(WAIT_MS)
        shots = Shots(page, ARTIFACTS / f"dashboard-{saga_mode}")
        dialogs: list[str] = []
        await _confirming(page, dialogs)
        await _log_in(page, app.url, shots)
        await _find_and_filter(page, app.url, orders, shots)
        await _discard_replay_and_abort(page, app.url, orders, shots, dialogs)
        await _resolve(page, app.url, orders["parked"], shots, saga_mode)
        await _health_and_docs(page, app.url, shots)
    except BaseException:
        print(app.tail(120))
        raise
    finally:
        app.stop()


async def _log_in(page: Page, url: str, shots: Shots) -> None:
    await page.goto(f"{url}/ui/login")
    await shots.take("login")
    await page.fill("input[name=token]", "wrong")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_have_text("wrong token")
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/ui$"))
    cookie = next(c for c in await page.context.cookies() if c["name"] == "saga_admin")
    assert (cookie["value"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        TOKEN, True, "Strict", "/",
    )  # fmt: skip


async def _find_and_filter(page: Page, url: str, orders: dict[str, Any], shots: Shots) -> None:
    await page.goto(f"{url}/ui")
    for order_id in [*orders["good"], *orders["bad"], orders["parked"], *orders["stuck"]]:
        await expect(page.locator(f"tr[data-order-id='{order_id}']")).to_be_visible()
    counts = page.locator(".counts")
    await expect(counts.locator("[data-status=COMPLETED] .count")).to_have_text("3")
    await expect(counts.locator("[data-status=COMPENSATED] .count")).to_have_text("2")
    await expect(counts.locator("[data-status=STUCK] .count")).to_have_text("2")
    await expect(counts.locator("[data-status=PARKED] .count")).to_have_text("1")
    await shots.take("sagas")

    await counts.locator("[data-status=STUCK]").click()
    await expect(page).to_have_url(re.compile(r"status=STUCK"))
    rows = page.locator("table.sagas tbody tr")
    await expect(rows).to_have_count(2)
    assert {await row.get_attribute("data-order-id") for row in await rows.all()} == set(
        orders["stuck"]
    )
    await shots.take("sagas-stuck")

    await page.goto(f"{url}/ui/sagas/{orders['bad'][0]}")
    await expect(page.locator("#saga-status")).to_have_text("COMPENSATED")
    await expect(page.locator(".reason")).to_contain_text("country_not_served")
    await expect(page.locator("svg.path-diagram")).to_be_visible()
    await shots.take("saga-compensated")


async def _discard_replay_and_abort(
    page: Page, url: str, orders: dict[str, Any], shots: Shots, dialogs: list[str]
) -> None:
    aborted, replayed = orders["stuck"]
    await page.goto(f"{url}/ui/sagas")
    await page.locator(f"tr[data-order-id='{aborted}'] a").click()
    await expect(page.locator("#saga-status")).to_have_text("RUNNING")
    timeline = page.locator("table.timeline")
    await expect(timeline).to_contain_text("payment.PaymentCompleted")
    await expect(timeline).to_contain_text("inventory.StockReserved")
    await expect(page.locator("svg.path-diagram")).to_contain_text("PaymentCompleted")
    await shots.take("saga-stuck")

    # Its dead letter goes first: in choreography the abort queues behind it.
    await page.goto(f"{url}/ui/dead-letters")
    letters = page.locator("table.dead-letters tbody tr[data-letter-id]")
    await expect(letters).to_have_count(3)  # the two stuck sagas' and the parked one's
    await shots.take("dead-letters")
    await _letter_row(page, aborted).get_by_role("button", name="Discard").click()
    await expect(page.locator("#flash")).to_contain_text("discard: DISCARDED")
    await _letter_row(page, replayed).get_by_role("button", name="Replay").click()
    await expect(page.locator("#flash")).to_contain_text("replay: RETRYING")
    await expect(letters).to_have_count(1)
    await shots.take("dead-letters-after")

    await page.goto(f"{url}/ui/sagas/{aborted}")
    await page.get_by_role("button", name="Abort").click()
    await expect(page.locator("#flash")).to_contain_text("abort: AbortSaga")
    await expect(page.locator("#saga-status")).to_have_text("COMPENSATED")
    await expect(page.locator("tr.compensation").first).to_be_visible()
    await expect(page.locator(".reason")).to_contain_text("aborted from the dashboard")
    await shots.take("saga-aborted")
    assert len(dialogs) == 3, dialogs

    await page.goto(f"{url}/ui/sagas/{replayed}")
    await expect(page.locator("#saga-status")).to_have_text("COMPLETED")
    await shots.take("saga-replayed")


def _letter_row(page: Page, order_id: str) -> Any:
    return page.locator("table.dead-letters tbody tr").filter(
        has=page.locator(f"a[href='/ui/sagas/{order_id}']")
    )


async def _resolve(page: Page, url: str, order_id: str, shots: Shots, saga_mode: str) -> None:
    await page.goto(f"{url}/ui/sagas/{order_id}")
    await expect(page.locator("#saga-status")).to_have_text("PARKED")
    await expect(page.locator("tr[data-step=payment] .outcome")).to_have_text("not undone")
    await shots.take("saga-parked")
    await page.get_by_role("button", name="Resolve").click()
    await expect(page.locator("#flash")).to_contain_text("resolve: ResolveSaga")
    await expect(page.locator(".notes")).to_contain_text(NOTE)
    if saga_mode == "orchestration":
        await expect(page.locator("#saga-status")).to_have_text("COMPENSATED")
    await shots.take("saga-resolved")


async def _health_and_docs(page: Page, url: str, shots: Shots) -> None:
    await page.goto(f"{url}/ui/health")
    # Every saga has ended but, in choreography, the resolved one: its undo waits behind
    # the dead letter its refund left in the payment consumer. The API agrees.
    sagas = await (await page.request.get(f"{url}/sagas")).json()
    unfinished = sum(saga["status"] not in ("COMPLETED", "COMPENSATED") for saga in sagas)
    await expect(page.locator("#in-flight")).to_have_text(str(unfinished))
    await expect(page.locator("#outbox-backlog")).to_have_text("0")
    # Seven sagas ended within the last minute (the runs above take less).
    assert float(await page.locator("#sagas-per-second").inner_text()) > 0
    await shots.take("health")

    await page.goto(f"{url}/schema")
    await expect(page.locator(".opblock").first).to_be_visible()
    await expect(page.locator("body")).to_contain_text("/sagas/{order_id}/abort")
    assert await page.locator(".opblock").count() >= 12
    await shots.take("schema")
