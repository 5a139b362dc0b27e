"""Authorize workers: phase 1 of the handshake and the tool catalog."""
