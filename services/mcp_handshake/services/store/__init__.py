"""The Redis side: transaction records, approvals, key registry and rate limits."""
