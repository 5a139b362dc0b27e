"""The per-kind key layout of deploy/: create it, and rotate each key in steps.

    python deploy/keys.py init deploy/config          # every key, split by kind
    python deploy/keys.py console deploy/config       # the web console's part, if missing
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

``init`` also writes ``<dir>/console/console_secret`` (0600), the web console's
cookie-signing secret; ``console`` adds the console's part to a layout made before it.

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
KINDS = ("authorize", "execute", "approval", "executor", "audit", "console")
NEXT = ".next"


def _private(root: Path, name: str) -> Path:
    return root / "keys" / PAIRS[name][0] / f"{name}.pem"


def _jwks(root: Path, name: str) -> Path | None:
    verifier = PAIRS[name][1]
    return None if verifier is None else root / "keys" / verifier / f"{name}.jwks.json"


def _write_jwks(path: Path, keys: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"keys": keys}, indent=2) + "\n")
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
        (root / "keys" / kind).mkdir(parents=True, exist_ok=True)
    (root / "targets" / "payments").mkdir(parents=True, exist_ok=True)
    for name in PAIRS:
        key = generate_private_key()
        save_private_key(_private(root, name), key)
        jwks = _jwks(root, name)
        if jwks is not None:
            _publish(root, name, [public_jwk(key)])
    return [f"created the key layout under {root / 'keys'}", *console(root)]


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
        secret.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        done.append(f"wrote {secret} (0600)")
    return done or ["the console's keys and secret are already in place"]


def rotate(root: Path, name: str) -> list[str]:
    """Step 1: a new private key beside the current one; its public half trusted too."""
    private = _private(root, name)
    staged = private.with_name(private.name + NEXT)
    if staged.exists():
        raise SystemExit(f"{staged} exists: promote it first")
    key = generate_private_key()
    save_private_key(staged, key)
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
    for command in ("rotate", "promote", "retire"):
        p = sub.add_parser(command)
        p.add_argument("dir", type=Path)
        p.add_argument("name", choices=sorted(PAIRS))
    args = parser.parse_args(argv)
    if args.command == "init":
        lines = init(args.dir)
    elif args.command == "console":
        lines = console(args.dir)
    else:
        lines = {"rotate": rotate, "promote": promote, "retire": retire}[args.command](
            args.dir, args.name
        )
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
