"""Exit codes of ``mcp-handshake``, one per class of error, defined here and nowhere else.

Scripts branch on these numbers, so they never change meaning. Every protocol
error code (:data:`mcp_handshake.shared.errors.ERRORS_BY_CODE`) maps to exactly
one class; ``--help`` and the README show the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXIT_CLASSES", "EXIT_CODES", "USAGE", "ExitClass", "exit_code", "help_epilog"]


@dataclass(frozen=True, slots=True)
class ExitClass:
    code: int
    name: str
    #: The protocol error codes in this class (the README says what each class means).
    errors: tuple[str, ...] = ()


EXIT_CLASSES: tuple[ExitClass, ...] = (
    ExitClass(0, "ok"),
    ExitClass(1, "failed"),  # the command ran and the answer is no (audit verify, ...)
    ExitClass(2, "usage"),  # typer's own, and arguments refused before any request
    ExitClass(3, "auth", ("unauthenticated", "forbidden")),
    ExitClass(4, "invalid", ("bad_request", "payload_too_large", "invalid_params",
                             "invalid_transaction", "unknown_tool", "validation_failed")),
    ExitClass(5, "denied", ("approval_denied",)),
    ExitClass(6, "pending", ("approval_pending",)),
    ExitClass(7, "rate_limited", ("rate_limited",)),
    ExitClass(8, "unavailable", ("unavailable",)),
    ExitClass(9, "outcome_unknown", ("outcome_unknown",)),
    ExitClass(10, "target_error", ("target_error",)),
    ExitClass(11, "internal", ("internal",)),
)  # fmt: skip

#: Protocol error code -> exit code.
EXIT_CODES: dict[str, int] = {e: c.code for c in EXIT_CLASSES for e in c.errors}
USAGE = 2
_INTERNAL = EXIT_CODES["internal"]


def exit_code(error_code: str) -> int:
    """The exit code for a protocol error code (an unknown code counts as ``internal``)."""
    return EXIT_CODES.get(error_code, _INTERNAL)


def help_epilog() -> str:
    """The exit-code table for ``mcp-handshake --help``."""

    def row(c: ExitClass) -> str:
        codes = "" if c.errors in {(), (c.name,)} else f": {', '.join(c.errors)}"
        return f"{c.code:>2}  {c.name}{codes}"

    rows = "\n".join(row(c) for c in EXIT_CLASSES)
    return f"Exit codes (stderr says '<error code>: <message>'):\n{rows}"
