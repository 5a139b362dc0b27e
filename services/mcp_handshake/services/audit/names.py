"""The audit worker's own names on the bus (no imports: the permission model reads them)."""

__all__ = ["CHECKPOINT_STREAM", "CHECKPOINT_SUBJECT", "RESUME"]

#: The stream of signed checkpoints published off-host (``deny_delete``, ``deny_purge``).
CHECKPOINT_STREAM = "HANDSHAKE_CHECKPOINTS"
CHECKPOINT_SUBJECT = "handshake.checkpoints.audit"
#: ``audit resume``: operator-only requests to a halted writer. Outside
#: ``handshake.audit.>``, so a control request is never itself an audit event.
RESUME = "handshake.control.audit.resume"
