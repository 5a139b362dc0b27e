"""What every worker kind shares: the endpoint wrapper, discovery, telemetry, the audit
emitter, the shared builder and the run loop."""
