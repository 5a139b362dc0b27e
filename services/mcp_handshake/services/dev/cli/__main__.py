from mcp_handshake.services.dev.cli._app import main

main()
