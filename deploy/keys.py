"""The per-kind key layout of deploy/: create it, and rotate each key in steps.

    python deploy/keys.py init deploy/config          # every key, split by kind
    python deploy/keys.py console deploy/config       # the web console's part, if missing
    python deploy/keys.py gateway deploy/config       # the gateway key, if missing
    python deploy/keys.py rotate deploy/config NAME   # 1. stage a new key, publish its public half
    python deploy/keys.py promote deploy/config NAME  # 2. sign with the new key
    python deploy/keys.py retire deploy/config NAME   # 3. stop trusting the old one

NAME is one of ``dispatch``, ``internal``, ``receipt``, ``audit``. Each kind's
directory under ``<dir>/keys/`` holds what that kind loads and nothing else:

    authorize/  internal.pem                       signs approval requests
    execute/    receipt.pem, dispatch.pem          signs receipts and dispatches
    approval/   internal.jwks.json                 verifies approval requests
    executor/   dispatch.jwks.json                 verifies dispatches (public only)
    audit/      audit.pem, audit.jwks.json         signs checkpoints; audit verify
    console/    audit.jwks.json                    the web console verifies the log
    gateway/    gateway_key                        tags the DPoP htu it forwards
    execute/    gateway_key                        (the same secret) honours only those

``init`` also writes ``<dir>/console/console_secret`` (0600), the web console's
cookie-signing secret; ``console`` adds the console's part to a layout made before it;
``gateway`` adds the gateway key to a layout made before it.

Modes are set explicitly, whatever the umask: directories 0700, private keys and
secrets 0600, public key sets 0644.

Between the steps, copy each changed directory to where the workers read it (a
Kubernetes Secret, see deploy/README.md) and restart the kinds that use it:
workers load their keys at start. Run it with the project's Python
(``.venv/bin/python``): it uses mcp_handshake's own key functions.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from mcp_handshake.shared.keys import (
    generate_private_key,
    load_private_key,
    public_jwk,
    save_private_key,
)

#: key name -> (kind that signs with it, kind that verifies with its public JWKS or None)
PAIRS: dict[str, tuple[str, str | None]] = {
    "dispatch": ("execute", "executor"),
    "internal": ("authorize", "approval"),
    "receipt": ("execute", None),  # clients fetch it from execute workers (handshake.v1.keys)
    "audit": ("audit", "audit"),
}
#: Other kinds that hold a copy of a public key set (kept in step with the verifier's).
COPIES: dict[str, tuple[str, ...]] = {"audit": ("console",)}
KINDS = ("authorize", "execute", "approval", "executor", "audit", "console", "gateway")
NEXT = ".next"
#: The secret gateways and execute workers share (HANDSHAKE_GATEWAY_KEY_FILE).
GATEWAY_KEY = "gateway_key"
DIR_MODE, PRIVATE_MODE, PUBLIC_MODE = 0o700, 0o600, 0o644


def _dir(path: Path) -> Path:
    """``path`` and its missing parents, 0700 whatever the umask."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for directory in (path, *missing):
        directory.chmod(DIR_MODE)
    return path


def _secret(path: Path, text: str) -> None:
    """A new secret file, 0600 from its creation (never briefly wider)."""
    _dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(PRIVATE_MODE)


def _save_key(path: Path, key: Any) -> None:
    _dir(path.parent)
    save_private_key(path, key)
    path.chmod(PRIVATE_MODE)


def _private(root: Path, name: str) -> Path:
    return root / "keys" / PAIRS[name][0] / f"{name}.pem"


def _jwks(root: Path, name: str) -> Path | None:
    verifier = PAIRS[name][1]
    return None if verifier is None else root / "keys" / verifier / f"{name}.jwks.json"


def _write_jwks(path: Path, keys: list[dict[str, Any]]) -> None:
    _dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"keys": keys}, indent=2) + "\n")
    tmp.chmod(PUBLIC_MODE)
    os.replace(tmp, path)


def _publish(root: Path, name: str, keys: list[dict[str, Any]]) -> None:
    """The public key set of ``name``, to its verifier and every copy (``COPIES``)."""
    jwks = _jwks(root, name)
    assert jwks is not None
    _write_jwks(jwks, keys)
    for kind in COPIES.get(name, ()):
        _write_jwks(root / "keys" / kind / jwks.name, keys)


def _holders(name: str) -> str:
    """Who loads the public key set of ``name``: its verifier and its copies' kinds."""
    return " and ".join(f"{k} workers" for k in (PAIRS[name][1], *COPIES.get(name, ())))


def _read_jwks(path: Path) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads(path.read_text()).get("keys", [])
    return keys


def init(root: Path) -> list[str]:
    """Create every kind's directory and every key; refuse to overwrite any key."""
    existing = [p for n in PAIRS if (p := _private(root, n)).exists()]
    if existing:
        raise SystemExit(
            f"keys already exist ({existing[0]}): use rotate (or console, for the web "
            "console's part of a layout made before it)"
        )
    for kind in KINDS:
        _dir(root / "keys" / kind)
    _dir(root / "targets" / "payments")
    for name in PAIRS:
        key = generate_private_key()
        _save_key(_private(root, name), key)
        jwks = _jwks(root, name)
        if jwks is not None:
            _publish(root, name, [public_jwk(key)])
    return [f"created the key layout under {root / 'keys'}", *console(root), *gateway(root)]


def gateway(root: Path) -> list[str]:
    """The key gateways and execute workers share, where missing: one secret, a copy in
    each kind's directory."""
    paths = [root / "keys" / kind / GATEWAY_KEY for kind in ("gateway", "execute")]
    if all(p.exists() for p in paths):
        return ["the gateway key is already in place"]
    if any(p.exists() for p in paths):
        raise SystemExit(f"only one of {paths[0]} and {paths[1]} exists: remove it first")
    value = secrets.token_urlsafe(48)
    for path in paths:
        _secret(path, value)
    return [f"wrote {paths[0]} and {paths[1]} (0600, the same secret)"]


def console(root: Path) -> list[str]:
    """The web console's part of the layout, alone (for a layout made before it had
    one): its copy of the audit public key set and its cookie secret, where missing."""
    done = []
    audit, copy = root / "keys" / "audit" / "audit.jwks.json", root / "keys" / "console"
    if not audit.is_file():
        raise SystemExit(f"{audit} is missing: run init first")
    if not (copy / audit.name).exists():
        _write_jwks(copy / audit.name, _read_jwks(audit))
        done.append(f"wrote {copy / audit.name}")
    secret = root / "console" / "console_secret"
    if not secret.exists():
        _secret(secret, secrets.token_urlsafe(48))
        done.append(f"wrote {secret} (0600)")
    return done or ["the console's keys and secret are already in place"]


def rotate(root: Path, name: str) -> list[str]:
    """Step 1: a new private key beside the current one; its public half trusted too."""
    private = _private(root, name)
    staged = private.with_name(private.name + NEXT)
    if staged.exists():
        raise SystemExit(f"{staged} exists: promote it first")
    key = generate_private_key()
    _save_key(staged, key)
    jwks = _jwks(root, name)
    steps = [f"staged {staged}"]
    if jwks is not None:
        _publish(root, name, [*_read_jwks(jwks), public_jwk(key)])
        steps.append(
            f"added kid {public_jwk(key)['kid']} to {jwks}: roll out the "
            f"{_holders(name)} now, then run: promote {name}"
        )
    else:
        steps.append(f"run: promote {name}")
    return steps


def promote(root: Path, name: str) -> list[str]:
    """Step 2: the staged key becomes the signing key."""
    private = _private(root, name)
    staged = private.with_name(private.name + NEXT)
    if not staged.exists():
        raise SystemExit(f"nothing staged for {name}: run rotate first")
    os.replace(staged, private)
    signer = PAIRS[name][0]
    tail = f", then run: retire {name}" if name in ("dispatch", "internal") else ""
    return [f"{private} replaced: roll out the {signer} workers now{tail}"]


def retire(root: Path, name: str) -> list[str]:
    """Step 3: the verifiers trust only the current signing key."""
    if name == "audit":
        raise SystemExit(
            "audit public keys are never retired: `audit verify` needs every key that "
            "signed a checkpoint still in the log"
        )
    jwks = _jwks(root, name)
    if jwks is None:
        return [f"{name}: no public key set to trim"]
    current = public_jwk(load_private_key(_private(root, name)))["kid"]
    kept = [k for k in _read_jwks(jwks) if k.get("kid") == current]
    if not kept:
        raise SystemExit(f"{jwks} does not hold the current {name} key: refusing")
    _publish(root, name, kept)
    return [f"{jwks} now trusts kid {current} only: roll out the {_holders(name)}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init").add_argument("dir", type=Path)
    sub.add_parser("console").add_argument("dir", type=Path)
    sub.add_parser("gateway").add_argument("dir", type=Path)
    for command in ("rotate", "promote", "retire"):
        p = sub.add_parser(command)
        p.add_argument("dir", type=Path)
        p.add_argument("name", choices=sorted(PAIRS))
    args = parser.parse_args(argv)
    if args.command == "init":
        lines = init(args.dir)
    elif args.command in ("console", "gateway"):
        lines = {"console": console, "gateway": gateway}[args.command](args.dir)
    else:
        lines = {"rotate": rotate, "promote": promote, "retire": retire}[args.command](
            args.dir, args.name
        )
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
