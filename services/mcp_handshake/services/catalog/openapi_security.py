"""A spec's security schemes as the target's credential declaration (kind and placement).

Where the secret is kept (``secret_env`` or ``secret_file``) is the operator's to fill
in: an importer never sees a secret.
"""

from __future__ import annotations

from typing import Any

__all__ = ["target_auth"]


def _one(scheme: dict[str, Any]) -> dict[str, Any] | None:
    kind = scheme.get("type")
    if kind == "apiKey" and scheme.get("in") in {"header", "query", "cookie"}:
        return {"type": "api_key", "location": scheme["in"], "header": scheme.get("name", "")}
    if kind == "basic" or (kind == "http" and str(scheme.get("scheme", "")).lower() == "basic"):
        return {"type": "basic", "username": "FILL-IN"}
    if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
        return {"type": "bearer"}
    if kind == "oauth2":
        flows = scheme.get("flows") or {}
        flow = flows.get("clientCredentials")
        if flow is None and scheme.get("flow") == "application":  # Swagger 2.0
            flow = scheme
        if flow is not None and flow.get("tokenUrl"):
            scopes = " ".join(sorted(flow.get("scopes") or {}))
            out = {"type": "oauth2_client_credentials", "token_url": flow["tokenUrl"],
                   "client_id": "FILL-IN"}  # fmt: skip
            return {**out, "scope": scopes} if scopes else out
    return None


def target_auth(spec: dict[str, Any]) -> dict[str, Any]:
    """The credential the spec asks for first (its global ``security``, else the first
    scheme it declares) that an executor can present; ``none`` if there is none."""
    schemes = (spec.get("components") or {}).get("securitySchemes") or spec.get(
        "securityDefinitions"
    ) or {}  # fmt: skip
    order = [name for req in spec.get("security") or [] for name in req]
    order += [name for name in schemes if name not in order]
    for name in order:
        scheme = schemes.get(name)
        mapped = _one(scheme) if isinstance(scheme, dict) else None
        if mapped is not None:
            return mapped
    return {"type": "none"}
