"""The web console over plain HTTP against the real stack: CSRF, headers, cookies, roles,
the console's NATS identity, and OIDC sign-in (authorization code + PKCE) against a small
OIDC provider run by the test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import nats
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mcp_handshake.services.console.app import create_app
from mcp_handshake.services.console.backend import Backend
from mcp_handshake.services.console.context import templates
from mcp_handshake.services.console.sessions import SessionStore
from mcp_handshake.services.console.settings import ConsoleSettings
from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.dev.devhome import mint_session
from mcp_handshake.services.dev.devstack import Stack, free_port
from mcp_handshake.services.dev.procs import Proc, terminate, wait_port
from mcp_handshake.services.policy import load_policy
from mcp_handshake.shared.proofs import ProofKey
from mcp_handshake.shared.settings import make_private_dirs
from tests.conftest import connected
from tests.test_cli import cli

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="session")
def console_url(stack: Stack) -> str:
    """The console of the session's stack, with dev login (as ``up`` starts it)."""
    url: str | None = getattr(stack, "_console_url", None)
    if url is None:
        url = stack.start_console()
        stack._console_url = url  # type: ignore[attr-defined]
    return url


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


@contextlib.contextmanager
def login(url: str, sub: str, *roles: str) -> Iterator[httpx.Client]:
    """A browser-like HTTP client signed in through the dev login."""
    with httpx.Client(base_url=url, timeout=15.0) as client:
        page = client.get("/login")
        assert page.status_code == 200
        form = {"sub": sub, "csrf": csrf_of(page.text), **{f"role_{r}": "1" for r in roles}}
        r = client.post("/login/dev", data=form)
        assert r.status_code == 303, r.text
        yield client


# -- headers and cookies ----------------------------------------------------------------


def test_every_page_carries_a_strict_csp_and_refuses_framing(console_url: str) -> None:
    with login(console_url, "hdr-auditor", "auditor") as c:
        for path in ("/login", "/transactions", "/status", "/approvals", "/nowhere"):
            r = c.get(path)
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
            assert "style-src 'self'" in csp and "unsafe-inline" not in csp, path
            assert "script-src" not in csp, path  # no script may run at all
            assert r.headers["x-frame-options"] == "DENY", path
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["cache-control"] == "no-store", path


def test_session_cookie_is_httponly_and_samesite_strict(console_url: str) -> None:
    r = httpx.get(f"{console_url}/login")
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    # Plain http on a loopback address is the one case without Secure (dev only).
    assert "secure" not in cookie.lower().replace("samesite", "")
    secure = ConsoleSettings(public_url="https://console.example.com", dev_login=False,
                             oidc_issuer="https://idp", oidc_client_id="c")  # fmt: skip
    assert secure.secure_cookies
    secure.check()


def test_plain_http_off_loopback_and_dev_login_off_loopback_are_refused() -> None:
    with pytest.raises(ValueError, match="plain http"):
        ConsoleSettings(public_url="http://console.example.com", dev_login=True).check()
    with pytest.raises(ValueError, match="dev login"):
        ConsoleSettings(host="0.0.0.0", public_url="https://c.example.com",  # noqa: S104
                        dev_login=True).check()  # fmt: skip
    with pytest.raises(ValueError, match="OIDC"):
        ConsoleSettings().check()


def test_a_forged_or_unknown_session_cookie_signs_nobody_in(console_url: str) -> None:
    with login(console_url, "cookie-auditor", "auditor") as c:
        assert c.get("/transactions").status_code == 200
        real = c.cookies["hs_console"]
        forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
        r = httpx.get(f"{console_url}/transactions", cookies={"hs_console": forged})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        # Signing out forgets the session: the same cookie no longer works.
        page = c.get("/transactions")
        assert c.post("/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
        r = httpx.get(f"{console_url}/transactions", cookies={"hs_console": real})
        assert r.status_code == 303


# -- CSRF -------------------------------------------------------------------------------


def test_state_changes_without_the_csrf_token_are_refused(console_url: str) -> None:
    with login(console_url, "csrf-approver", "approver", "auditor") as c:
        good = csrf_of(c.get("/approvals").text)
        posts = ["/approvals/txn-x/decide", "/logout", "/transactions/txn-x", "/login/dev"]
        for path in posts:
            for form in ({}, {"csrf": "wrong"}, {"csrf": ""}):
                r = c.post(path, data={"decision": "approve", "sub": "mallory", **form})
                assert r.status_code == 403, (path, form, r.text)
        # The right token from another origin is refused too.
        r = c.post("/logout", data={"csrf": good}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        r = c.post("/logout", data={"csrf": good}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        assert c.get("/approvals").status_code == 200  # still signed in
        # With it, the same post goes through.
        assert c.post("/logout", data={"csrf": good}).status_code == 303
        assert c.get("/approvals").status_code == 303


def test_a_login_post_without_a_csrf_token_signs_nobody_in(console_url: str) -> None:
    with httpx.Client(base_url=console_url) as c:
        c.get("/login")
        r = c.post("/login/dev", data={"sub": "mallory", "role_approver": "1"})
        assert r.status_code == 403
        assert c.get("/approvals").status_code == 303


# -- roles ------------------------------------------------------------------------------


def test_only_approvers_see_approvals_and_only_auditors_and_operators_the_audit_trail(
    console_url: str,
) -> None:
    cases = {("treasury",): (403, 403, 403), ("approver",): (200, 403, 200),
             ("auditor",): (403, 200, 200), ("operator",): (403, 200, 200)}  # fmt: skip
    for roles, (approvals, audit, status) in cases.items():
        with login(console_url, f"role-{roles[0]}", *roles) as c:
            assert c.get("/approvals").status_code == approvals, roles
            assert c.get("/transactions").status_code == audit, roles
            assert c.get("/transactions/some-txn").status_code == (404 if audit == 200
                                                                   else 403), roles  # fmt: skip
            assert c.get("/status").status_code == status, roles
            nav = c.get("/login").text
            assert ('id="nav-approvals"' in nav) == (approvals == 200), roles
            assert ('id="nav-transactions"' in nav) == (audit == 200), roles


def test_signed_out_visitors_are_sent_to_the_login_page(console_url: str) -> None:
    for path in ("/", "/approvals", "/transactions", "/transactions/t1", "/status"):
        r = httpx.get(f"{console_url}{path}")
        assert r.status_code == 303 and r.headers["location"] == "/login", path


def test_status_shows_workers_per_kind_and_pending_approvals(console_url: str) -> None:
    with login(console_url, "status-op", "operator") as c:
        page = c.get("/status").text
        for kind in ("authorize", "execute", "executor", "approval", "audit"):
            assert f"<td>{kind}</td><td>2</td>" in page or f"<td>{kind}</td><td>1</td>" in page
        assert 'id="pending"' in page and "Audit lag:" in page


# -- autoescape -------------------------------------------------------------------------


def test_templates_escape_everything() -> None:
    env = templates()
    item = {"txn": "t1", "tool": "<b>x</b>", "sub": "<script>alert(1)</script>",
            "tier": "restricted", "preview": '{"text": "<script>alert(1)</script>"}',
            "preview_hash": "h", "age_s": 1.0, "expires_in_s": 9.0, "approvals": 0,
            "quorum": 1, "escalated": None, "agent": "<img src=x>", "reason": None}  # fmt: skip
    html = env.get_template("approvals.html").render(
        user=None,
        csrf="c",
        approver=True,
        auditor=False,
        status_ok=True,
        flash="<i>f</i>",
        items=[item],
        error=None,
    )
    assert "<script>" not in html and "<img" not in html and "<b>x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;i&gt;f" in html


# -- the console's NATS identity --------------------------------------------------------


async def test_the_console_identity_may_not_act_as_an_agent_or_a_worker(stack: Stack) -> None:
    """Least privilege: approvals, keys, discovery and audit stream info; nothing else."""
    async with connected(stack, "console") as con:
        r = await con.request(con.s.keys, {})
        assert "keys" in r.body
        for subject in (
            con.s.authorize,
            con.s.execute,
            con.s.status,
            "$JS.API.STREAM.LIST",
            "$JS.API.STREAM.PURGE.HANDSHAKE_AUDIT",
            "handshake.audit.console.x",
        ):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await con.nc.request(subject, b"{}", timeout=1.0)


# -- OIDC: authorization code with PKCE -------------------------------------------------


class TinyOidc:
    """An OIDC provider just big enough for the code flow: it checks the PKCE verifier
    (S256) before it issues tokens. The ID token is its own; the access token is a session
    from the stack's dev identity provider, which the mediator trusts."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = Ed25519PrivateKey.generate()
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "EdDSA"}]}
        self.codes: dict[str, dict[str, str]] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self.secret = secrets.token_urlsafe(16)
        self.sub, self.roles = "olivia", ["approver"]

    def app(self) -> Starlette:
        async def meta(request: Request) -> Response:
            return JSONResponse({"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks",
                                 "authorization_endpoint": f"{self.issuer}/authorize",
                                 "token_endpoint": f"{self.issuer}/token"})  # fmt: skip

        async def authorize(request: Request) -> Response:
            q = dict(request.query_params)
            self.authorize_requests.append(q)
            code = secrets.token_urlsafe(16)
            self.codes[code] = q
            return RedirectResponse(f"{q['redirect_uri']}?code={code}&state={q['state']}", 303)

        async def token(request: Request) -> Response:
            form = dict(await request.form())
            q = self.codes.pop(str(form.get("code")), None)
            basic = base64.b64encode(f"console:{self.secret}".encode()).decode()
            if q is None or request.headers.get("authorization") != f"Basic {basic}":
                return JSONResponse({"error": "invalid_grant"}, 400)
            digest = hashlib.sha256(str(form.get("code_verifier", "")).encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != q["code_challenge"]:
                return JSONResponse({"error": "invalid_grant", "error_description": "pkce"}, 400)
            now = int(time.time())
            id_token = jwt.encode({"iss": self.issuer, "aud": "console", "sub": self.sub,
                                   "iat": now, "exp": now + 300, "nonce": q["nonce"],
                                   "roles": self.roles}, self.key, "EdDSA",
                                  headers={"kid": "k1"})  # fmt: skip
            access = mint_session(self.home, self.sub, roles=self.roles)
            return JSONResponse({"access_token": access, "id_token": id_token,
                                 "token_type": "Bearer", "expires_in": 300})  # fmt: skip

        async def jwks(request: Request) -> Response:
            return JSONResponse(self.jwks)

        return Starlette(routes=[
            Route("/.well-known/openid-configuration", meta), Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]), Route("/jwks", jwks),
        ])  # fmt: skip


@contextlib.contextmanager
def own_console(stack: Stack, tmp: Path, **env: str) -> Iterator[str]:
    """A console process of the test's own on ``stack``, with extra settings."""
    port = free_port()
    proc = console_process(stack, tmp, port, **env)
    try:
        wait_port(port, "console")
        yield f"http://127.0.0.1:{port}"
    finally:
        terminate([proc])


def console_process(stack: Stack, tmp: Path, port: int, *args: str, **env: str) -> Proc:
    """``worker console`` on ``stack`` with its cookie secret in a file of its own (a
    file the settings name must exist: the console never creates it)."""
    secret = tmp / "console_secret"
    if not secret.exists():
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_urlsafe(48))
    full = {**stack.env("console"), "HANDSHAKE_CONSOLE_PORT": str(port),
            "HANDSHAKE_CONSOLE_SECRET_FILE": str(secret), **env}  # fmt: skip
    log = open(tmp / "console.log", "wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "mcp_handshake.services.dev.cli", "worker", "console", *args],
        env=full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return Proc("console", popen, log)


def test_console_health_port_then_sigterm_ends_it_cleanly(stack: Stack, tmp_path: Path) -> None:
    """``--health-port`` as for the workers: ready once it serves; SIGTERM ends it with
    exit 0 after its clean-up (uvicorn's own handler would re-raise the signal)."""
    port, health = free_port(), free_port()
    proc = console_process(stack, tmp_path, port, "--health-port", str(health),
                           HANDSHAKE_CONSOLE_DEV_LOGIN="1")  # fmt: skip
    try:
        wait_port(port, "console")
        deadline = time.monotonic() + 15
        while httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=3).status_code != 200:
            assert time.monotonic() < deadline, "the console never became ready"
            time.sleep(0.1)
        proc.popen.send_signal(15)
        assert proc.popen.wait(timeout=15) == 0
    finally:
        terminate([proc])
    assert "Traceback" not in (tmp_path / "console.log").read_text()


def test_the_consoles_approver_roles_follow_a_policy_reload(stack: Stack, tmp_path: Path) -> None:
    """The console reloads the policy as the workers do: a file change (every
    ``watch_s``) and SIGHUP; a role that approves only under the new set may then list
    approvals, and no longer once it is gone again."""
    policy = tmp_path / "policy.cedar"
    original = load_config(stack.home / "handshake.toml").policy_file.read_text()
    policy.write_text(original)
    text = (stack.home / "handshake.toml").read_text()
    text = re.sub(r"(?m)^policy_file = .*$", f"policy_file = {json.dumps(str(policy))}", text)
    config = stack.home / f"handshake-{tmp_path.name}.toml"  # beside the keys it names
    config.write_text(text.replace("[policy]\n", "[policy]\nwatch_s = 0.2\n", 1))
    more = ('\n@id("treasury-approves")\n@approver_roles("treasury")\npermit (principal, '
            'action, resource) when { principal.roles.contains("nobody") };\n')  # fmt: skip
    port = free_port()
    proc = console_process(stack, tmp_path, port, HANDSHAKE_CONFIG=str(config),
                           HANDSHAKE_CONSOLE_DEV_LOGIN="1")  # fmt: skip

    def approvals_status(expected: int) -> None:
        deadline = time.monotonic() + 15
        while True:
            with login(f"http://127.0.0.1:{port}", "tess", "treasury") as c:
                status = c.get("/approvals").status_code
            if status == expected or time.monotonic() > deadline:
                assert status == expected
                return
            time.sleep(0.2)

    try:
        wait_port(port, "console")
        approvals_status(403)
        policy.write_text(original + more)  # picked up by the file watch
        approvals_status(200)
        # the set in force again, under the mtime the watch has seen: only SIGHUP tells
        seen = policy.stat().st_mtime_ns
        fresh = tmp_path / "policy.new"
        fresh.write_text(original)
        os.utime(fresh, ns=(seen, seen))
        fresh.replace(policy)
        time.sleep(0.5)
        approvals_status(200)
        proc.popen.send_signal(signal.SIGHUP)
        approvals_status(403)
        assert proc.popen.poll() is None  # SIGHUP reloads, it does not end the console
    finally:
        terminate([proc])
        config.unlink()
    assert "Traceback" not in (tmp_path / "console.log").read_text()


@pytest.mark.parametrize("case", ["secret missing", "port taken"])
def test_console_start_up_failures_are_one_line(stack: Stack, tmp_path: Path, case: str) -> None:
    port = free_port()
    env = {"HANDSHAKE_CONSOLE_DEV_LOGIN": "1"}
    taken = None
    if case == "secret missing":
        env["HANDSHAKE_CONSOLE_SECRET_FILE"] = str(tmp_path / "absent")
    else:
        taken = socket.create_server(("127.0.0.1", port))
    proc = console_process(stack, tmp_path, port, **env)
    try:
        code = proc.popen.wait(timeout=30)
    finally:
        terminate([proc])
        if taken is not None:
            taken.close()
    out = (tmp_path / "console.log").read_text()
    # the CLI's exit classes (dev/cli/_exits.py): 2 a setting refused, 1 a start-up failure
    assert code == (2 if case == "secret missing" else 1), out[-2000:]
    assert "Traceback" not in out, out[-2000:]
    last = out.strip().splitlines()[-1]
    if case == "secret missing":
        assert "the console secret file is missing" in last, last
    else:
        assert last.endswith(f"failed: console port 127.0.0.1:{port}: Address already in use"), last


@pytest.fixture(scope="module")
def oidc_console(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, TinyOidc]]:
    provider = TinyOidc(stack.home)
    server = uvicorn.Server(uvicorn.Config(provider.app(), host="127.0.0.1", port=provider.port,
                                           log_level="warning", lifespan="off"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_port(provider.port, "test OIDC provider")
    tmp = tmp_path_factory.mktemp("oidc-console")
    secret = tmp / "client_secret"
    secret.write_text(provider.secret)
    try:
        with own_console(
            stack,
            tmp,
            HANDSHAKE_CONSOLE_OIDC_ISSUER=provider.issuer,
            HANDSHAKE_CONSOLE_OIDC_CLIENT_ID="console",
            HANDSHAKE_CONSOLE_OIDC_CLIENT_SECRET_FILE=str(secret),
        ) as url:
            yield url, provider
    finally:
        server.should_exit = True
        thread.join(5)


def test_oidc_sign_in_uses_pkce_s256_state_and_nonce(oidc_console: tuple[str, TinyOidc]) -> None:
    url, provider = oidc_console
    with httpx.Client(base_url=url, timeout=15.0) as c:
        assert 'id="oidc-login"' in c.get("/login").text
        assert 'id="dev-login"' not in c.get("/login").text
        r = c.get("/login/oidc")
        assert r.status_code == 303
        where = urlsplit(r.headers["location"])
        q = {k: v[0] for k, v in parse_qs(where.query).items()}
        assert f"{where.scheme}://{where.netloc}{where.path}" == f"{provider.issuer}/authorize"
        assert q["response_type"] == "code" and q["client_id"] == "console"
        assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
        assert len(q["state"]) >= 20 and len(q["nonce"]) >= 20
        assert q["redirect_uri"] == f"{url}/login/callback"
        login_cookie = r.headers["set-cookie"].lower()
        assert "httponly" in login_cookie and "samesite=lax" in login_cookie
        back = httpx.get(r.headers["location"])  # the provider sends the browser back
        done = c.get(back.headers["location"])
        assert done.status_code == 200 and "Signed in as olivia" in done.text
        page = c.get("/approvals")
        assert page.status_code == 200 and "Waiting for your decision" in page.text
        assert c.get("/transactions").status_code == 403  # an approver, not an auditor
        # The code and state were single use.
        assert c.get(back.headers["location"]).status_code == 400


def test_oidc_callback_checks_state_and_the_login_cookie(
    oidc_console: tuple[str, TinyOidc],
) -> None:
    url, provider = oidc_console
    with httpx.Client(base_url=url, timeout=15.0) as c:
        r = c.get("/login/oidc")
        back = httpx.get(r.headers["location"]).headers["location"]
        q = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
        wrong_state = f"{url}/login/callback?code={q['code']}&state={q['state']}x"
        r = c.get(wrong_state)
        assert r.status_code == 400 and "state does not match" in r.text
        # Another browser (no login cookie) cannot use this browser's code and state.
        r = httpx.get(back)
        assert r.status_code == 400 and "no sign-in in progress" in r.text
        assert c.get("/approvals").status_code == 303
        # A verifier the provider did not see (a code from another flow) is refused.
        other = c.get("/login/oidc")
        other_back = httpx.get(other.headers["location"]).headers["location"]
        oq = {k: v[0] for k, v in parse_qs(urlsplit(other_back).query).items()}
        provider.codes[q["code"]] = provider.authorize_requests[-1] | {"code_challenge": "x" * 43}
        r = c.get(f"{url}/login/callback?code={q['code']}&state={oq['state']}")
        assert r.status_code == 400 and "did not redeem" in r.text


# -- decisions signed with an approver's key file ---------------------------------------


async def test_a_console_with_an_approver_key_file_signs_that_approvers_decisions(
    stack: Stack, tmp_path: Path
) -> None:
    """The decision carries a JWS by the approver's registered key; the audit story shows
    it verified. An approver without a key file decides unsigned (no ``signed_by``)."""
    keys = make_private_dirs(tmp_path / "approver-keys")
    signer = ProofKey.load_or_create(keys / "kai-signer.pem")
    reg = cli(stack, "keys", "register", "--sub", "kai-signer", str(keys / "kai-signer.pem"))
    assert reg.returncode == 0, reg.stderr
    async with connected(stack) as raw:
        tess = raw.session("tess-signed", "treasury")
        txns = []
        for n in (1, 2):
            params = {"to_account": f"acct_S1gned0{n}x", "amount": 1500, "currency": "EUR"}
            r = await raw.authorize(tess, "payments.send_payment", params)
            assert r.body["status"] == "pending_approval", r.body
            txns.append(r.body["transaction_id"])

    def decide(url: str, sub: str, txn: str) -> str:
        with login(url, sub, "approver") as c:
            page = c.get("/approvals")
            assert f'id="approval-{txn}"' in page.text
            r = c.post(f"/approvals/{txn}/decide",
                       data={"csrf": csrf_of(page.text), "decision": "approve"})  # fmt: skip
            assert r.status_code == 303
            return c.get("/approvals").text

    with own_console(stack, tmp_path, HANDSHAKE_CONSOLE_DEV_LOGIN="1",
                     HANDSHAKE_CONSOLE_APPROVER_KEYS=str(keys)) as url:  # fmt: skip
        assert f"{txns[0]}: approved" in await asyncio.to_thread(decide, url, "kai-signer", txns[0])
        assert f"{txns[1]}: approved" in await asyncio.to_thread(decide, url, "lou-plain", txns[1])
        with login(url, "aud-signed", "auditor") as c:
            deadline = time.monotonic() + 20
            while True:
                signed, plain = c.get(f"/transactions/{txns[0]}"), c.get(f"/transactions/{txns[1]}")
                if "approval.decided" in signed.text and "approval.decided" in plain.text:
                    break
                assert time.monotonic() < deadline, "the audit writer did not catch up"
                await asyncio.sleep(0.5)
    assert f"decision signed by key {signer.thumbprint} (verified)" in signed.text
    assert "by=kai-signer" in signed.text
    assert "decision signed by key" not in plain.text and "by=lou-plain" in plain.text


async def test_an_auditor_sees_the_deciding_policies_on_a_transactions_story(
    stack: Stack, console_url: str
) -> None:
    big = {"customer_id": "cus_8f3k2m9q", "amount": 5000, "currency": "EUR", "memo": None}
    async with connected(stack) as raw:
        r = await raw.authorize(raw.session("alice-story", "billing"), "payments.create_invoice",
                                big)  # fmt: skip
        assert r.body["status"] == "pending_approval", r.body
    txn = r.body["transaction_id"]
    with login(console_url, "aud-policy", "auditor") as c:
        deadline = time.monotonic() + 20
        while "authorize.granted" not in (page := c.get(f"/transactions/{txn}")).text:
            assert time.monotonic() < deadline, "the audit writer did not catch up"
            await asyncio.sleep(0.5)
    assert "verdict=approval" in page.text
    assert "policies=invoices.create.billing.large" in page.text
    assert "policy_hash=sha256:" in page.text


# -- failures ---------------------------------------------------------------------------


async def test_a_lost_nats_connection_fails_closed_with_a_clear_page(
    stack: Stack, tmp_path: Path
) -> None:
    nc = await nats.connect(**stack.connect_options("console"))
    await nc.close()
    cfg = load_config(stack.home / "handshake.toml")
    policy = load_policy(cfg.policy_file, ToolRegistry.from_modules(cfg.tool_modules))
    backend = Backend(stack.settings("console"), cfg, policy, nc)
    app = create_app(ConsoleSettings(dev_login=True, secret_file=tmp_path / "secret"), backend)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090") as c:
        page = await c.get("/login")
        form = {"sub": "ned-op", "csrf": csrf_of(page.text), "role_operator": "1",
                "role_approver": "1"}  # fmt: skip
        assert (await c.post("/login/dev", data=form)).status_code == 303
        assert (await c.get("/healthz")).status_code == 503
        status = await c.get("/status")
        assert status.status_code == 503 and 'id="unavailable"' in status.text
        assert "content-security-policy" in status.headers
        approvals = await c.get("/approvals")
        assert 'id="error"' in approvals.text or approvals.status_code == 503
        page = await c.get("/login")
        decided = await c.post(
            "/approvals/txn-1/decide", data={"csrf": csrf_of(page.text), "decision": "approve"}
        )
        assert decided.status_code in {303, 503}
        if decided.status_code == 303:
            assert "not recorded" in (await c.get("/approvals")).text


def test_a_flood_of_anonymous_visitors_never_signs_a_user_out() -> None:
    store = SessionStore("s" * 40, secure=True, max_sessions=3)
    user = store.sign_in(None, "ada", frozenset({"auditor"}), "tok", 60)
    first = store.new()
    for _ in range(10):
        store.new()
    assert store._sessions.get(user.sid) is user  # still signed in
    assert first.sid not in store._sessions and len(store._sessions) == 3
    assert store.cookie == "__Host-hs_console"
