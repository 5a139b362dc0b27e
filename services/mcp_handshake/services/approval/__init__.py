"""Approval workers: the confirmation agent, human decisions, and status long-polls."""
