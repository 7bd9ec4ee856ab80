"""Loopback servers for the tests that read pictures, manifests and Image API services over HTTP:
a quiet handler (`QuietHandler`, with CORS when a class asks for it), `serving(handler)` on a free
loopback port, and the engine as the service makes it from the settings a test set (`toy_engine`)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from typing import Any

from indexer.engine import Engine
from indexer.settings import Settings
from service.state import AUTO_EMBED_LIMIT


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A loopback handler that logs nothing and answers with `_send` (with `cors`, to any origin)."""

    cors = False
    port = 0

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if getattr(self, "cors", False):  # also for handlers that borrow this `_send`
            self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: Any) -> Iterator[str]:
    """`handler` on a loopback port, its request log emptied: the server's base URL."""
    handler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def toy_engine(toy_loader: Any) -> Engine:
    """The engine as the service makes it from the settings the test set, with the toy model."""
    return Engine.from_settings(Settings.from_env(), loader=toy_loader, batch_window_ms=2, auto_embed_limit=AUTO_EMBED_LIMIT)
