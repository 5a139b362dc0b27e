"""The demo deployment: a payments target API, its tools, config and policy."""
