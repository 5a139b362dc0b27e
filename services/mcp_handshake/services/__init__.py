"""The mediator's worker services: authorize, execute, executor (and the dev stack)."""
