"""The audit trail: events on JetStream, gated execute intents, a hash-chained signed log."""
