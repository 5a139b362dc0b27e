"""Subject names, queue groups and Redis keys, defined once."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AUDIT_PREFIX",
    "DEFAULT_INTERNAL_PREFIX",
    "DEFAULT_PREFIX",
    "Keys",
    "QueueGroups",
    "Subjects",
]

DEFAULT_PREFIX = "handshake.v1"
DEFAULT_INTERNAL_PREFIX = "handshake.internal"
#: Audit events: ``handshake.audit.<worker kind>.<event kind>`` (stream ``HANDSHAKE_AUDIT``).
AUDIT_PREFIX = "handshake.audit"


class QueueGroups:
    AUTHORIZE = "authorize"
    EXECUTE = "execute"
    APPROVAL = "approval"
    AUDIT = "audit"

    @staticmethod
    def executor(target: str) -> str:
        return f"executor-{target}"


@dataclass(frozen=True, slots=True)
class Subjects:
    """Every subject the system uses, derived from two prefixes."""

    prefix: str = DEFAULT_PREFIX
    internal: str = DEFAULT_INTERNAL_PREFIX

    @property
    def authorize(self) -> str:
        return f"{self.prefix}.authorize"

    @property
    def execute(self) -> str:
        return f"{self.prefix}.execute"

    @property
    def authorize_batch(self) -> str:
        """Many authorizations under one session verification (``shared.batch``)."""
        return f"{self.prefix}.authorize.batch"

    @property
    def execute_batch(self) -> str:
        """Many executions under one session verification (``shared.batch``)."""
        return f"{self.prefix}.execute.batch"

    @property
    def tools(self) -> str:
        return f"{self.prefix}.tools"

    @property
    def status(self) -> str:
        return f"{self.prefix}.status"

    @property
    def keys(self) -> str:
        return f"{self.prefix}.keys"

    @property
    def reconcile(self) -> str:
        """Settle a transaction left ``outcome_unknown`` (its original caller only)."""
        return f"{self.prefix}.reconcile"

    @property
    def approvals_list(self) -> str:
        return f"{self.prefix}.approvals.list"

    @property
    def approvals_decide(self) -> str:
        return f"{self.prefix}.approvals.decide"

    def executor(self, target: str) -> str:
        return f"{self.internal}.executor.{target}"

    def executor_batch(self, target: str) -> str:
        """One signed message carrying many dispatches for ``target``'s executors."""
        return f"{self.internal}.batch.executor.{target}"

    @property
    def approval_requests(self) -> str:
        """JetStream subject of approval requests (stream ``HANDSHAKE_APPROVALS``)."""
        return f"{self.internal}.approval.request"

    def approval_decided(self, txn: str) -> str:
        """Core NATS wake-up after a decision, for ``status`` long-polls."""
        return f"{self.internal}.approval.decided.{txn}"


class Keys:
    """Every Redis key the system uses. The part in braces is the Cluster hash tag."""

    #: Sorted set of transactions waiting for a human decision (score: expiry).
    PENDING = "handshake:approvals:pending"
    #: Sorted set of tokens granted and not yet used (score: expiry).
    LIVE = "handshake:tokens:live"
    #: Set by the approval worker that restored pending approvals from NATS KV into an
    #: empty Redis; its absence means Redis lost its data (or never held any).
    RESTORED = "handshake:approvals:restored"
    #: Counter of tokens that expired unused.
    EXPIRED = "handshake:tokens:expired"

    @staticmethod
    def tx(token_hash: str) -> str:
        """Transaction record and status, keyed by the SHA-256 of the token (never the token)."""
        return f"handshake:tx:{{{token_hash}}}"

    @staticmethod
    def txn(transaction_id: str) -> str:
        """Transaction id -> token hash, so status and approvals can find a transaction."""
        return f"handshake:txn:{{{transaction_id}}}"

    @staticmethod
    def dispatched(transaction_id: str) -> str:
        """Set once by the executor that runs a transaction's dispatch: no executor runs it
        again (the marker outlives the dispatch)."""
        return f"handshake:dispatched:{{{transaction_id}}}"

    @staticmethod
    def reconciled(transaction_id: str, attempt: int) -> str:
        """Set once by the executor that runs a transaction's ``attempt``-th reconcile
        dispatch: each reconcile runs at most once, like the transaction's own dispatch."""
        return f"handshake:dispatched:{{{transaction_id}}}:reconcile:{attempt}"

    @staticmethod
    def jti(thumbprint: str, jti: str) -> str:
        """A proof's ``jti``, claimed once per proof key."""
        return f"handshake:jti:{{{thumbprint}}}:{jti}"

    @staticmethod
    def tx_jti(token_hash: str, thumbprint: str, jti: str) -> str:
        """A proof's ``jti`` claimed for one transaction, in its record's hash slot: the
        consume script claims it in the same atomic step that uses the token up."""
        return f"handshake:tx:{{{token_hash}}}:jti:{thumbprint}:{jti}"

    @staticmethod
    def pubkeys(sub: str) -> str:
        """Public keys registered for a subject (thumbprint -> JWK)."""
        return f"handshake:pubkeys:{{{sub}}}"

    @staticmethod
    def rate(sub: str, tool: str) -> str:
        """Authorizations of ``tool`` by ``sub`` in the current rate-limit window."""
        return f"handshake:rl:{{{sub}}}:{tool}"

    @staticmethod
    def velocity(sub: str, tool: str) -> str:
        """Restricted requests of ``tool`` by ``sub`` in the confirmation agent's window."""
        return f"handshake:velocity:{{{sub}}}:{tool}"
