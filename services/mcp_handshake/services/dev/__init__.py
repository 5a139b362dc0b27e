"""Development tooling: the dev stack, dev home, demo and the CLI."""
