"""The service holds: what a caller sends never reaches the log, slow URLs never freeze it (issue #27)."""

from __future__ import annotations

from service.serve import redacted_request_line


def test_the_access_log_line_keeps_query_names_but_never_their_values():
    line = redacted_request_line("GET", "/v1/collections", "token=s3cret&limit=5", "HTTP/1.1")
    assert line == "GET /v1/collections?token=…&limit=… HTTP/1.1"
    assert "s3cret" not in line
    assert redacted_request_line("GET", "/v1/health", "", "HTTP/1.1") == "GET /v1/health HTTP/1.1"
