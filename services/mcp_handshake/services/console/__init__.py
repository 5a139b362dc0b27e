"""The web console (``mcp-handshake worker console``): approvers decide pending
transactions, auditors and operators read a transaction's story from the audit
trail, everyone with a console role sees live status.

Server-rendered (Starlette, Jinja2 with autoescape), no script at all. It
connects to NATS as its own identity (``console``) and acts for the signed-in
user with that user's session JWT, so the mediator applies the same rules as
for the CLI. See ``docs/console.md``.
"""
