"""The web console in a real browser (headless Debian Chromium driven by Selenium) against
the real stack: an approver approves and denies payments an agent is waiting on, an auditor
reads a transaction's verified story, roles and escaping hold. Screenshots go under each
test's temporary directory."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from mcp_handshake.client import CallResult, HandshakeClient
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack
from mcp_handshake.shared.errors import ApprovalDenied
from mcp_handshake.shared.proofs import ProofKey
from tests.conftest import connected
from tests.test_console import console_url

__all__ = ["console_url"]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,1400")  # fmt: skip

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)  # a loaded CI machine is slow
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 0


def submit(driver: WebDriver, button: WebElement) -> None:
    """Click a form's button and wait until the next page has replaced this one.

    The old document is marked before the click; the wait ends when a fully loaded document
    without the mark answers. While Chromium is between documents it answers with errors
    (stale element, or "does not belong to the document"): those mean "not yet"."""
    driver.execute_script("window.__handshakeOldPage = true;")
    button.click()
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(_replaced)


def _replaced(driver: WebDriver) -> bool:
    return bool(
        driver.execute_script(
            "return window.__handshakeOldPage === undefined && document.readyState === 'complete';"
        )
    )


def sign_in(driver: WebDriver, url: str, sub: str, *roles: str) -> None:
    driver.get(f"{url}/login")
    driver.find_element(By.ID, "sub").send_keys(sub)
    for role in roles:
        driver.find_element(By.ID, f"role_{role}").click()
    submit(driver, driver.find_element(By.ID, "dev-login-submit"))
    assert sub in driver.find_element(By.ID, "whoami").text


def wait_for(
    driver: WebDriver, find: Callable[[], WebElement], timeout: float = 20.0
) -> WebElement:
    """Reload the page until ``find`` finds its element (pages hold no script to poll)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return find()
        except NoSuchElementException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            driver.refresh()


def approval_with(driver: WebDriver, text: str) -> WebElement:
    return driver.find_element(By.XPATH, f"//article[.//pre[contains(., '{text}')]]")


class Agent:
    """A treasury agent with a key-bound session, on its own NATS identity."""

    def __init__(self, stack: Stack, tmp_path: Path, sub: str) -> None:
        key = ProofKey.load_or_create(tmp_path / f"{sub}.pem")
        token = mint_session(stack.home, sub, roles=["treasury"], jkt=key.thumbprint)
        self.client = HandshakeClient(stack.nats_url or "", session=token, proof_key=key,
                                      connect_options=stack.agent_options(),
                                      approval_timeout_s=60)  # fmt: skip


def payment(to: str, amount: float = 2500) -> dict[str, Any]:
    return {"to_account": to, "amount": amount, "currency": "EUR"}


async def test_an_approver_approves_a_payment_and_the_waiting_agent_completes(
    stack: Stack, console_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    recipient = "acct_C0nsoleApprove01"
    async with Agent(stack, tmp_path, "tess-browser").client as hs:
        call = asyncio.create_task(hs.call("payments.send_payment", payment(recipient)))

        def approve() -> None:
            sign_in(browser, console_url, "ana-approver", "approver")
            browser.get(f"{console_url}/approvals")
            item = wait_for(browser, lambda: approval_with(browser, recipient))
            # The full operation: tool, every param with the whole recipient, requester.
            assert item.find_element(By.CLASS_NAME, "tool").text == "payments.send_payment"
            preview = item.find_element(By.CLASS_NAME, "preview").text
            assert f'"to_account": "{recipient}"' in preview and '"amount": 2500' in preview
            assert item.find_element(By.CLASS_NAME, "requester").text == "tess-browser"
            assert item.find_element(By.CLASS_NAME, "quorum").text == "0/1"
            shot(browser, tmp_path, "approval-pending")
            item.find_element(By.NAME, "reason").send_keys("invoice 2024-117 checked")
            submit(browser, item.find_element(By.CSS_SELECTOR, "button.approve"))
            assert "approved (1/1 approvals)" in browser.find_element(By.ID, "flash").text
            shot(browser, tmp_path, "approval-approved")

        await asyncio.to_thread(approve)
        result: CallResult = await asyncio.wait_for(call, 30)
    assert result.result["status"] == "sent", result.result  # the target made the payment
    assert [a["by"] for a in result.claims["approvals"]] == ["ana-approver"]


async def test_an_approver_denies_a_payment_and_the_agent_is_told(
    stack: Stack, console_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    recipient = "acct_C0nsoleDeny02"
    async with Agent(stack, tmp_path, "tess-denied").client as hs:
        call = asyncio.create_task(hs.call("payments.send_payment", payment(recipient, 4200)))

        def deny() -> None:
            sign_in(browser, console_url, "dan-approver", "approver")
            browser.get(f"{console_url}/approvals")
            item = wait_for(browser, lambda: approval_with(browser, recipient))
            item.find_element(By.NAME, "reason").send_keys("unknown account")
            submit(browser, item.find_element(By.CSS_SELECTOR, "button.deny"))
            assert "denied" in browser.find_element(By.ID, "flash").text
            shot(browser, tmp_path, "approval-denied")
            browser.get(f"{console_url}/approvals")
            assert not browser.find_elements(By.XPATH, f"//pre[contains(., '{recipient}')]")

        await asyncio.to_thread(deny)
        with pytest.raises(ApprovalDenied) as denied:
            await asyncio.wait_for(call, 30)
    assert denied.value.code == "approval_denied"


async def test_an_auditor_reads_the_verified_story_of_a_transaction(
    stack: Stack, console_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    recipient = "acct_C0nsoleAudit03"
    async with Agent(stack, tmp_path, "tess-audited").client as hs, connected(stack) as raw:
        pending = await hs.submit("payments.send_payment", payment(recipient, 3100))
        txn = pending.transaction_id
        approver = raw.session("alma-approver", "approver", bind=False)
        decided = await raw.decide(approver, txn, "approve", sign=False)
        assert decided.error is None, decided.body
        result = await hs.wait(pending, 30)

    def audit() -> None:
        sign_in(browser, console_url, "aud-itor", "auditor")
        assert not browser.find_elements(By.ID, "nav-approvals")
        browser.get(f"{console_url}/transactions?user=tess-audited&tool=send_payment")
        link = wait_for(browser, lambda: browser.find_element(By.LINK_TEXT, txn))
        submit(browser, link)
        # The audit writer appends asynchronously: reload until the receipt is recorded.
        wait_for(browser, lambda: browser.find_element(
            By.XPATH, "//li[.//strong[text()='receipt.issued']]"))  # fmt: skip
        kinds = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#story .kind")]
        for kind in ("authorize.granted", "approval.requested", "approval.decided",
                     "execute.intent", "execute.succeeded", "receipt.issued"):  # fmt: skip
            assert kind in kinds, kinds
        story = browser.find_element(By.ID, "story").text
        assert "by=alma-approver" in story and "sub=tess-audited" in story
        assert recipient not in story  # the trail holds hashes, never raw params
        assert browser.find_element(By.ID, "chain").text.startswith("Audit chain OK")
        browser.find_element(By.ID, "receipt").send_keys(result.receipt)
        submit(browser, browser.find_element(By.ID, "verify-receipt"))
        verdict = browser.find_element(By.ID, "receipt-result").text
        assert verdict.startswith("Receipt verified"), verdict
        shot(browser, tmp_path, "audit-story")
        # A tampered receipt does not verify.
        browser.find_element(By.ID, "receipt").send_keys(result.receipt[:-6] + "AAAAAA")
        submit(browser, browser.find_element(By.ID, "verify-receipt"))
        assert "NOT verified" in browser.find_element(By.ID, "receipt-result").text

    await asyncio.to_thread(audit)


async def test_a_non_approver_sees_no_approvals_and_script_in_params_is_text(
    stack: Stack, console_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    evil = "<script>document.title='pwned'</script>"
    async with connected(stack) as raw:
        requester = raw.session("rita-requester", "treasury")
        granted = await raw.request(raw.s.authorize, {
            "tool": "test.two_approvers", "params": {"text": evil},
            "context": {"agent": "<b>bold agent</b>", "reason": "<img src=x onerror=alert(1)>"},
        }, requester)  # fmt: skip
        assert granted.error is None and granted.body["status"] == "pending_approval"
        txn = granted.body["transaction_id"]

    def look() -> None:
        sign_in(browser, console_url, "tom-treasury", "treasury")
        assert not browser.find_elements(By.ID, "nav-approvals")
        browser.get(f"{console_url}/approvals")
        assert browser.find_element(By.ID, "forbidden").text == "Not allowed"
        assert txn not in browser.page_source
        shot(browser, tmp_path, "not-an-approver")
        browser.delete_all_cookies()
        sign_in(browser, console_url, "pia-approver", "approver")
        browser.get(f"{console_url}/approvals")
        item = wait_for(browser, lambda: browser.find_element(By.ID, f"approval-{txn}"))
        assert evil in item.find_element(By.CLASS_NAME, "preview").text
        assert item.find_element(By.CLASS_NAME, "reason").text == "<img src=x onerror=alert(1)>"
        assert item.find_element(By.CLASS_NAME, "agent").text == "<b>bold agent</b>"
        assert item.find_element(By.CLASS_NAME, "quorum").text == "0/2"
        assert not browser.find_elements(By.TAG_NAME, "script")
        assert not browser.find_elements(By.CSS_SELECTOR, "article img, article b")
        assert browser.title != "pwned"
        shot(browser, tmp_path, "script-as-text")

    await asyncio.to_thread(look)
    async with connected(stack) as raw:  # leave nothing pending for other tests
        denier = raw.session("dora-approver", "approver", bind=False)
        assert (await raw.decide(denier, txn, "deny", sign=False)).error is None


async def test_a_decision_posted_without_its_csrf_token_is_refused(
    stack: Stack, console_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    """A signed-in approver's own browser, the form's CSRF field removed before it is
    sent: 403, and the payment stays pending until a proper decision."""
    recipient = "acct_C0nsoleCsrf03"
    async with Agent(stack, tmp_path, "tess-csrf").client as hs:
        call = asyncio.create_task(hs.call("payments.send_payment", payment(recipient, 3100)))

        def forge_then_approve() -> None:
            sign_in(browser, console_url, "cy-approver", "approver")
            browser.get(f"{console_url}/approvals")
            item = wait_for(browser, lambda: approval_with(browser, recipient))
            browser.execute_script(
                "arguments[0].closest('form').querySelector('input[name=csrf]').remove()",
                item.find_element(By.CSS_SELECTOR, "button.approve"),
            )
            submit(browser, item.find_element(By.CSS_SELECTOR, "button.approve"))
            assert "CSRF" in browser.page_source, browser.page_source[:500]
            shot(browser, tmp_path, "csrf-refused")
            browser.get(f"{console_url}/approvals")
            item = wait_for(browser, lambda: approval_with(browser, recipient))
            assert item.find_element(By.CLASS_NAME, "quorum").text == "0/1"
            submit(browser, item.find_element(By.CSS_SELECTOR, "button.approve"))

        await asyncio.to_thread(forge_then_approve)
        result: CallResult = await asyncio.wait_for(call, 30)
    assert [a["by"] for a in result.claims["approvals"]] == ["cy-approver"]
