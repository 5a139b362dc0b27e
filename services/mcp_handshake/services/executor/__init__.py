"""Executor workers: the only holders of target API credentials."""
