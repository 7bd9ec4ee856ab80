"""nginx in front of `clip-gaze serve`, configured by deploy/nginx/clip-gaze.conf.template as
docker-compose.yml runs it: stalled uploads no longer stall the API, and what nginx answers itself
(400, 413, 414, 431, 502) is in the API's JSON error shape. Runs Debian's nginx, as the user running
the tests, with every file under the test's temporary directory."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from clip_gaze import Client
from conftest import draw_shape, encode
from test_e2e_serve import Server, free_port

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
if NGINX is None:
    pytest.skip("nginx is not installed (apt-get install -y nginx): nginx tests skipped", allow_module_level=True)

pytestmark = [pytest.mark.nginx, pytest.mark.e2e, pytest.mark.xdist_group("nginx")]  # one nginx and server, on one worker
TEMPLATE = Path(__file__).parents[1] / "deploy" / "nginx" / "clip-gaze.conf.template"
ERROR_KEYS = {"ok", "status", "code", "error"}


def render(upstream: str, port: int, access_log: Path) -> str:
    """What the nginx image's envsubst step makes of the template, then the two lines that differ on
    loopback: the listen address and the access log (stdout in the image)."""
    text = TEMPLATE.read_text().replace("${CLIP_GAZE_UPSTREAM}", upstream)
    assert "${" not in text, "the template has a placeholder that docker-compose.yml does not fill in"
    for old, new in (("listen 8080;", f"listen 127.0.0.1:{port};"), ("/var/log/nginx/access.log", str(access_log))):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


class Nginx:
    def __init__(self, root: Path, upstream_port: int):
        self.root, self.port = root, free_port()
        self.access_log, self.error_log = root / "access.log", root / "error.log"
        (root / "clip-gaze.conf").write_text(render(f"127.0.0.1:{upstream_port}", self.port, self.access_log))
        temp_paths = "\n".join(
            f"    {kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (root / "nginx.conf").write_text(
            "daemon off;\n"
            # As root, nginx's workers would run as nobody, who cannot enter the test's directory.
            + ("user root;\n" if os.geteuid() == 0 else "")
            + f"pid {root / 'nginx.pid'};\nerror_log {self.error_log} info;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n{temp_paths}\n    include {root / 'clip-gaze.conf'};\n}}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Nginx":
        argv = [str(NGINX), "-p", str(self.root), "-e", str(self.error_log), "-c", str(self.root / "nginx.conf")]
        with open(self.root / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "nginx.out").read_text() + self.error_log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("nginx did not listen:\n" + self.error_log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default `clip-gaze serve` shape the issue measured: 1 worker, 4 threads."""
    port = free_port()
    srv = Server(tmp_path_factory.mktemp("nginx-api") / "home", port,
                 ["clip-gaze", "serve", "--port", str(port), "--workers", "1", "--threads", "4"])
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def start_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    started: list[Nginx] = []

    def start(upstream_port: int) -> Nginx:
        started.append(Nginx(tmp_path_factory.mktemp("nginx"), upstream_port))
        return started[-1].start()

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


@pytest.fixture(scope="module")
def proxy(api: Server, start_nginx) -> Nginx:
    return start_nginx(api.port)


def exchange(port: int, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one answer (by its Content-Length: after an error nginx may linger, then
    reset the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers["content-length"]) and (chunk := s.recv(65536)):
            body += chunk
    return int(lines[0].split()[1]), headers, body


def assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int) -> dict:
    got, headers, body = answer
    assert got == status, body[:300]
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert set(error) == ERROR_KEYS and error["ok"] is False and error["status"] == status, error
    assert re.fullmatch(r"[a-z_]+", error["code"]) and len(error["error"]) > 10, error
    return error


@contextlib.contextmanager
def stalled_uploads(port: int, n: int = 16) -> Iterator[None]:
    """n uploads that send their headers and a few bytes of a 1 MB body, then nothing."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
            s.sendall(
                b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: multipart/form-data; boundary=stall\r\nContent-Length: 1000000\r\n\r\n"
                b'--stall\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG'
            )
        time.sleep(0.5)  # every one of them accepted and waiting for its body
        yield
    finally:
        for s in socks:
            s.close()


def health_seconds(port: int, timeout: float) -> float | None:
    """Wall time of GET /v1/health, or None when it took longer than timeout."""
    start = time.monotonic()
    try:
        status, _, _ = exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout)
    except TimeoutError:
        return None
    assert status == 200
    return time.monotonic() - start


def test_stalled_uploads_do_not_stall_the_api_behind_nginx(api: Server, proxy: Nginx):
    with stalled_uploads(proxy.port):
        through_nginx = health_seconds(proxy.port, timeout=5)
    assert through_nginx is not None and through_nginx < 1.0, through_nginx

    # The contrast, so this test keeps showing what nginx is for: gunicorn alone hands each stalled
    # upload one of its 4 threads and answers nothing else.
    with stalled_uploads(api.port):
        direct = health_seconds(api.port, timeout=1.5)
    assert direct is None, f"gunicorn alone answered in {direct:.2f} s with 16 stalled uploads"
    deadline = time.monotonic() + 20  # the threads come back once the uploads are gone
    while health_seconds(api.port, timeout=2) is None:
        assert time.monotonic() < deadline, "gunicorn did not recover after the stalled uploads closed"


def test_a_normal_analysis_goes_through_and_the_access_log_keeps_no_credentials(proxy: Nginx):
    res = Client(f"http://127.0.0.1:{proxy.port}", timeout=30).analyze(encode(draw_shape()), top_k=1)
    assert res["ok"] is True and "movements" in res["results"]

    basic = base64.b64encode(b"s3cret:")  # curl -u s3cret:  (a token as the user name)
    status, _, _ = exchange(proxy.port, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: basic-auth-probe\r\n"
                            b"Authorization: Basic " + basic + b"\r\nConnection: close\r\n\r\n")
    assert status == 200
    deadline = time.monotonic() + 5  # nginx logs a request once its answer is sent: maybe just after we read it
    while "basic-auth-probe" not in (log := proxy.access_log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "POST /v1/analyze" in log and "basic-auth-probe" in log  # the requests were logged...
    assert "s3cret" not in log and basic.decode() not in log  # ...without the credentials


REQUESTS = {
    "malformed request line": (400, b"GARBAGE\r\n\r\n"),
    "20 KB query string": (414, b"GET /v1/health?q=" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    "64 KB header": (431, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 65_536 + b"\r\nConnection: close\r\n\r\n"),
}


@pytest.mark.parametrize("what", list(REQUESTS))
def test_requests_nginx_refuses_get_json_errors(proxy: Nginx, what: str):
    status, request = REQUESTS[what]
    assert_json_error(exchange(proxy.port, request), status)


def test_a_body_over_the_limit_gets_413_json_before_it_is_sent(proxy: Nginx):
    limit_mb = int(re.search(r"client_max_body_size (\d+)m;", TEMPLATE.read_text())[1])
    assert limit_mb >= 32  # never below the API's default CLIP_GAZE_MAX_UPLOAD_MB
    head = (b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (limit_mb * 1024 * 1024 + 1))
    error = assert_json_error(exchange(proxy.port, head), 413)
    assert "32 MB" in error["error"] and error["code"] == "request_entity_too_large"  # as the API says it


def test_the_api_stopped_gets_502_json(start_nginx):
    proxy = start_nginx(free_port())  # nothing listens there
    error = assert_json_error(exchange(proxy.port, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"), 502)
    assert "not reachable" in error["error"]
