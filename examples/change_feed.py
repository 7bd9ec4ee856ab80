"""A museum's IIIF server in miniature, on a loopback port, for trying `clip-gaze collection sync`:
one IIIF Presentation 3 manifest per example picture and a IIIF Change Discovery API 1.0 stream of
their activities, a page per call to `create`/`update`/`delete`.

    from examples.change_feed import Feed
    with Feed("examples") as feed:      # feed.url: the stream; feed.host: for CLIP_GAZE_FETCH_ALLOW
        feed.create("red-circle", "blue-square")
        ...
"""

from __future__ import annotations

import http.server
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any


class Feed:
    def __init__(self, pictures: str | Path = "examples"):
        self.folder = Path(pictures)
        self.pages: list[list[dict[str, Any]]] = []
        self.clock = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
        feed = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                found = feed.answer(self.path)
                body, ctype = (found, "image/png") if isinstance(found, bytes) else (json.dumps(found).encode(), "application/json")
                self.send_response(200 if found is not None else 404)
                self.send_header("Content-Type", ctype if found is not None else "text/plain")
                self.send_header("Content-Length", str(len(body) if found is not None else 0))
                self.end_headers()
                if found is not None:
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_port}"
        self.base = f"http://{self.host}"
        self.url = f"{self.base}/changes/collection.json"

    def __enter__(self) -> "Feed":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _page(self, kind: str, names: tuple[str, ...]) -> None:
        page = []
        for name in names:
            self.clock += timedelta(minutes=1)
            page.append({"type": kind, "object": {"id": f"{self.base}/manifests/{name}.json", "type": "Manifest"},
                         "endTime": self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")})
        self.pages.append(page)

    def create(self, *names: str) -> None:
        self._page("Create", names)

    def update(self, *names: str) -> None:
        self._page("Update", names)

    def delete(self, *names: str) -> None:
        self._page("Delete", names)

    def answer(self, path: str) -> Any:
        parts = path.strip("/").split("/")
        if path == "/changes/collection.json":
            return {"@context": "http://iiif.io/api/discovery/1/context.json", "id": self.url, "type": "OrderedCollection",
                    "totalItems": sum(map(len, self.pages)),
                    "first": {"id": f"{self.base}/changes/0.json", "type": "OrderedCollectionPage"},
                    "last": {"id": f"{self.base}/changes/{len(self.pages) - 1}.json", "type": "OrderedCollectionPage"}}
        if len(parts) == 2 and parts[0] == "changes" and parts[1].removesuffix(".json").isdigit():
            n = int(parts[1].removesuffix(".json"))
            if n >= len(self.pages):
                return None
            page = {"@context": "http://iiif.io/api/discovery/1/context.json", "id": f"{self.base}{path}",
                    "type": "OrderedCollectionPage", "orderedItems": self.pages[n]}
            return {**page, "prev": {"id": f"{self.base}/changes/{n - 1}.json", "type": "OrderedCollectionPage"}} if n else page
        if len(parts) == 2 and parts[0] in ("manifests", "pictures"):
            name = parts[1].rsplit(".", 1)[0]
            picture = self.folder / f"{name}.png"
            if not picture.is_file():
                return None
            return picture.read_bytes() if parts[0] == "pictures" else self.manifest(name)
        return None

    def manifest(self, name: str) -> dict[str, Any]:
        canvas = f"{self.base}/canvas/{name}"
        return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{self.base}/manifests/{name}.json",
                "type": "Manifest", "label": {"en": [name.replace("-", " ")]},
                "items": [{"id": canvas, "type": "Canvas", "width": 256, "height": 256, "items": [{
                    "id": f"{canvas}/page", "type": "AnnotationPage", "items": [{
                        "id": f"{canvas}/painting", "type": "Annotation", "motivation": "painting", "target": canvas,
                        "body": {"id": f"{self.base}/pictures/{name}.png", "type": "Image", "format": "image/png"}}]}]}]}
