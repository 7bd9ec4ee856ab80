"""`Client`: the clip-gaze REST API from Python (standard library only).

    >>> from clip_gaze import Client
    >>> api = Client("http://127.0.0.1:8000", token="s3cret")
    >>> api.analyze("painting.jpg", vocabularies=["movements"], top_k=3)["results"]["movements"]
"""

from __future__ import annotations

import io
import json
import mimetypes
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence, Union
from urllib import error, parse, request

ImageArg = Union[str, Path, bytes, Any]  # a path, encoded bytes, or a PIL image


class ApiError(Exception):
    """An error answer of the API: `status`, machine `code` and readable `message`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # -- reading --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._call("GET", "/v1/health")

    def models(self) -> dict[str, Any]:
        return self._call("GET", "/v1/models")

    def vocabularies(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/vocabularies")["vocabularies"]

    def vocabulary(self, name: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._call("GET", f"/v1/vocabularies/{parse.quote(name)}?offset={offset}&limit={limit}")

    # -- analysis -------------------------------------------------------------------------------
    def analyze(self, image: ImageArg, vocabularies: Iterable[str] | None = None, top_k: int | None = None) -> dict[str, Any]:
        fields = _fields(vocabularies, top_k)
        return self._call("POST", "/v1/analyze", files=[("image", _image_part(image, "image"))], fields=fields)

    def analyze_batch(
        self, images: Sequence[ImageArg], vocabularies: Iterable[str] | None = None, top_k: int | None = None
    ) -> dict[str, Any]:
        files = [("image", _image_part(im, f"image-{i}")) for i, im in enumerate(images)]
        return self._call("POST", "/v1/analyze/batch", files=files, fields=_fields(vocabularies, top_k))

    def compare(self, image: ImageArg, phrases: Sequence[str]) -> dict[str, Any]:
        return self._call(
            "POST", "/v1/compare", files=[("image", _image_part(image, "image"))],
            fields=[("phrases", json.dumps(list(phrases), ensure_ascii=False))],
        )

    # -- custom vocabularies (need a token) -----------------------------------------------------
    def create_vocabulary(
        self, name: str, phrases: Sequence[Any] = (), description: str | None = None, template: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "phrases": list(phrases)}
        if description is not None:
            body["description"] = description
        if template is not None:
            body["template"] = template
        return self._call("POST", "/v1/vocabularies", json_body=body)

    def add_phrases(self, name: str, phrases: Sequence[Any]) -> dict[str, Any]:
        return self._call("POST", f"/v1/vocabularies/{parse.quote(name)}/phrases", json_body={"phrases": list(phrases)})

    def remove_phrases(
        self, name: str, terms: Sequence[str] | None = None, external_ids: Sequence[str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if terms is not None:
            body["terms"] = list(terms)
        if external_ids is not None:
            body["external_ids"] = list(external_ids)
        return self._call("DELETE", f"/v1/vocabularies/{parse.quote(name)}/phrases", json_body=body)

    def delete_vocabulary(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/vocabularies/{parse.quote(name)}")

    # -- transport ------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        fields: list[tuple[str, str]] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = None
        if files is not None:
            data, ctype = _multipart(fields or [], files)
            headers["Content-Type"] = ctype
        elif json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except error.HTTPError as exc:
            raw = exc.read()
            try:
                body = json.loads(raw.decode("utf-8"))
                raise ApiError(body.get("status", exc.code), body.get("code", "error"), body.get("error", "")) from None
            except (ValueError, AttributeError):
                raise ApiError(exc.code, "http_error", raw[:200].decode("utf-8", "replace")) from None


def _fields(vocabularies: Iterable[str] | None, top_k: int | None) -> list[tuple[str, str]]:
    fields = []
    if vocabularies is not None:
        fields.append(("vocabularies", vocabularies if isinstance(vocabularies, str) else ",".join(vocabularies)))
    if top_k is not None:
        fields.append(("top_k", str(top_k)))
    return fields


def _image_part(image: ImageArg, default_name: str) -> tuple[str, bytes, str]:
    if isinstance(image, (str, Path)):
        p = Path(image)
        return p.name, p.read_bytes(), mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    if isinstance(image, (bytes, bytearray)):
        return default_name, bytes(image), "application/octet-stream"
    if hasattr(image, "save"):  # a PIL image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return default_name + ".png", buf.getvalue(), "image/png"
    raise TypeError("image must be a path, bytes or a PIL image")


def _multipart(fields: list[tuple[str, str]], files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8") + b"\r\n")
    for name, (filename, content, ctype) in files:
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode()
        )
        out.write(content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"
