"""Key files and JWKs: generation, loading, public JWKs, RFC 7638 thumbprints.

All cryptography is ``cryptography``'s; JWK conversion is PyJWT's; the
thumbprint's canonical JSON is RFC 8785 (which yields exactly RFC 7638's form:
required members, sorted, no whitespace).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from .hashing import canonical_json

__all__ = [
    "PrivateKey",
    "PublicKey",
    "algorithm_for",
    "generate_private_key",
    "jwk_thumbprint",
    "load_or_create_private_key",
    "load_private_key",
    "public_jwk",
    "save_private_key",
]

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

_REQUIRED_MEMBERS = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}


def generate_private_key(alg: str = "EdDSA") -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported key algorithm {alg!r}")


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The JWS ``alg`` for a key: EdDSA for Ed25519, ES256 for P-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("unsupported curve")


def save_private_key(path: Path, key: PrivateKey) -> None:
    """Write a PKCS#8 PEM readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: only Ed25519 and P-256 keys are supported")
    return key


def load_or_create_private_key(path: Path, alg: str = "EdDSA") -> PrivateKey:
    """Load the key at ``path``, creating it first if it does not exist."""
    if not path.exists():
        save_private_key(path, generate_private_key(alg))
    return load_private_key(path)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    members = _REQUIRED_MEMBERS.get(jwk.get("kty", ""))
    if members is None:
        raise ValueError("unsupported kty")
    required = {name: jwk[name] for name in members}
    return _b64(hashlib.sha256(canonical_json(required)).digest())


def public_jwk(key: PrivateKey | PublicKey, *, use: str = "sig") -> dict[str, Any]:
    """The public JWK of a key, with ``kid`` set to its thumbprint."""
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, ed25519.Ed25519PublicKey):
        data: dict[str, Any] = dict(OKPAlgorithm.to_jwk(public, as_dict=True))
    else:
        data = dict(ECAlgorithm.to_jwk(public, as_dict=True))
    data["kid"] = jwk_thumbprint(data)
    data["alg"] = algorithm_for(public)
    data["use"] = use
    return data
