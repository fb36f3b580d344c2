"""Network transport: WAL port (WebSocket), HTTP API, peer exchange, auth."""
