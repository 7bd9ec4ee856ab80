"""`Client`: the clip-gaze REST API from Python (urllib; answers parsed into the API's own models).

    >>> from clip_gaze import Client
    >>> api = Client("http://127.0.0.1:8000", token="s3cret")  # a key (clip-gaze keys create) or a token
    >>> api.analyze("painting.jpg", vocabularies=["movements"], top_k=3).results["movements"].matches[0].phrase
"""

from __future__ import annotations

import io
import json
import mimetypes
import random
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar, Union
from urllib import error, parse, request

from pydantic import BaseModel, ValidationError

from indexer.schema import (
    Analysis,
    BatchAnswer,
    Health,
    ModelsAnswer,
    Vocabulary,
    VocabularyList,
    VocabularyPage,
    WriteAnswer,
)
from indexer.schema.access import AuditList, KeyAnswer, KeyCreated, KeyInfo, KeyList
from indexer.schema.compare_models import CompareModelsAnswer
from indexer.schema.collections import (
    AnalysisRow,
    CollectionAnswer,
    CollectionInfo,
    CollectionList,
    CollectionView,
    JobAnswer,
    JobInfo,
    SearchAnswer,
)
from indexer.schema.interrogate import Interrogation
from indexer.schema.interop import AnnotationPageDocument, ReviewAnswer, ReviewInfo
from indexer.schema.sync import RemovalAnswer

ImageArg = Union[str, Path, bytes, Any]  # a path, encoded bytes, or a PIL image
M = TypeVar("M", bound=BaseModel)
RETRY_STATUSES = {429, 502, 503, 504}  # the server (or nginx in front of it) says: not now
MAX_RETRY_AFTER = 60.0


class ApiError(Exception):
    """An error answer of the API: `status`, machine `code` and readable `message`. A server that
    cannot be reached gives status 0 and code `unreachable`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Client:
    """Answers are typed (`indexer.schema`): `api.analyze(p).results["movements"].matches[0].phrase`,
    and `answer["results"]` still works as it did on the dicts of clip-gaze 1.0.

    Requests that are safe to repeat (reads, analyses, adding phrases, removals) are retried up to
    `retries` times when the server cannot be reached or answers 502/503/504, after `backoff` ×
    2^attempt seconds or the server's Retry-After."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 120.0,
                 retries: int = 3, backoff: float = 0.5):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    # -- reading --------------------------------------------------------------------------------
    def health(self) -> Health:
        return self._call(Health, "GET", "/v1/health")

    def models(self) -> ModelsAnswer:
        return self._call(ModelsAnswer, "GET", "/v1/models")

    def vocabularies(self) -> list[Vocabulary]:
        return self._call(VocabularyList, "GET", "/v1/vocabularies").vocabularies

    def vocabulary(self, name: str, offset: int = 0, limit: int = 100) -> VocabularyPage:
        return self._call(VocabularyPage, "GET", f"/v1/vocabularies/{parse.quote(name)}?offset={offset}&limit={limit}")

    # -- analysis -------------------------------------------------------------------------------
    def analyze(self, image: ImageArg, vocabularies: Iterable[str] | None = None, top_k: int | None = None,
                model: str | None = None) -> Analysis:
        """`model`: one the server serves (`models().served`); its default if None."""
        fields = _fields(vocabularies, top_k, model)
        return self._call(Analysis, "POST", "/v1/analyze", files=[("image", _image_part(image, "image"))], fields=fields)

    def analyze_batch(
        self, images: Sequence[ImageArg], vocabularies: Iterable[str] | None = None, top_k: int | None = None,
        model: str | None = None,
    ) -> BatchAnswer:
        files = [("image", _image_part(im, f"image-{i}")) for i, im in enumerate(images)]
        return self._call(BatchAnswer, "POST", "/v1/analyze/batch", files=files, fields=_fields(vocabularies, top_k, model))

    def compare(self, image: ImageArg, phrases: Sequence[str], model: str | None = None) -> Analysis:
        return self._call(
            Analysis, "POST", "/v1/compare", files=[("image", _image_part(image, "image"))],
            fields=[("phrases", json.dumps(list(phrases), ensure_ascii=False)), *_fields(None, None, model)],
        )

    def compare_models(self, image: ImageArg, models: Iterable[str] | None = None, vocabularies: Iterable[str] | None = None,
                       phrases: Sequence[str] | None = None, top_k: int | None = None) -> CompareModelsAnswer:
        """`image` under each of `models` (None: every model the server serves), over `vocabularies` or
        exactly `phrases`, with every pair's rank agreement (POST /v1/compare-models)."""
        fields = _fields(vocabularies, top_k)
        if models is not None:
            fields.append(("models", models if isinstance(models, str) else ",".join(models)))
        if phrases is not None:
            fields.append(("phrases", json.dumps(list(phrases), ensure_ascii=False)))
        return self._call(CompareModelsAnswer, "POST", "/v1/compare-models", files=[("image", _image_part(image, "image"))],
                          fields=fields)

    def interrogate(self, image: ImageArg, mode: str = "best", caption: str | None = None,
                    vocabularies: Iterable[str] | None = None, **options: Any) -> Interrogation:
        """POST /v1/interrogate: the prompt, its cosine and each part's gain. `options`: start_vocabularies
        (a list, or "" to start empty), forced, max_steps, pool."""
        fields = [("mode", mode), *_fields(vocabularies, None)]
        if caption is not None:
            fields.append(("caption", caption))
        for key, value in options.items():
            if value is not None:
                fields.append((key, value if isinstance(value, str) else ",".join(value) if isinstance(value, (list, tuple))
                               else str(value)))
        return self._call(Interrogation, "POST", "/v1/interrogate", files=[("image", _image_part(image, "image"))],
                          fields=fields)

    # -- collections ----------------------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        return self._call(CollectionList, "GET", "/v1/collections").collections

    def collection(self, name: str, errors: bool = False, offset: int = 0, limit: int = 100) -> CollectionView:
        query = parse.urlencode({"errors": str(errors).lower(), "offset": offset, "limit": limit})
        return self._call(CollectionView, "GET", f"/v1/collections/{parse.quote(name)}?{query}")

    def create_collection(self, name: str, description: str | None = None, private: bool = False) -> CollectionAnswer:
        body: dict[str, Any] = {"name": name, **({"description": description} if description is not None else {})}
        if private:
            body["private"] = True
        return self._call(CollectionAnswer, "POST", "/v1/collections", json_body=body, retry=False)

    def add_sources(self, name: str, sources: Sequence[str], callback_url: str | None = None) -> JobInfo:
        """Starts a background job on the server; `wait(job.id)` follows it. With `callback_url`, the
        server POSTs the job's answer there, signed, when it ends (README "Job callbacks")."""
        path = f"/v1/collections/{parse.quote(name)}/sources"
        body: dict[str, Any] = {"sources": list(sources), **({"callback_url": callback_url} if callback_url else {})}
        return self._call(JobAnswer, "POST", path, json_body=body, retry=False).job

    def remove_pictures(self, name: str, external_ids: Sequence[str] = (), sources: Sequence[str] = ()) -> RemovalAnswer:
        """The pictures of collection `name` with these external ids or sources, removed (`removed`: how many)."""
        body: dict[str, Any] = {k: list(v) for k, v in (("external_ids", external_ids), ("sources", sources)) if v}
        return self._call(RemovalAnswer, "DELETE", f"/v1/collections/{parse.quote(name)}/pictures", json_body=body)

    def sync(self, name: str, changes: str, callback_url: str | None = None) -> JobInfo:
        """Starts a sync of collection `name` with IIIF Change Discovery stream `changes` on the server (a
        background job; `wait(job.id)` follows it); with `callback_url`, the job's answer is POSTed there when it ends."""
        body: dict[str, Any] = {"changes": changes, **({"callback_url": callback_url} if callback_url else {})}
        return self._call(JobAnswer, "POST", f"/v1/collections/{parse.quote(name)}/sync", json_body=body, retry=False).job

    def job(self, job_id: str) -> JobInfo:
        return self._call(JobAnswer, "GET", f"/v1/jobs/{parse.quote(job_id)}").job

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> JobInfo:
        """The job once it ended: done, failed, or interrupted (its server stopped while it ran and was
        started with CLIP_GAZE_RESUME_JOBS=0: `reason` says so). A job whose server restarts is resumed
        and waited for. After `timeout` seconds (None: no limit), ApiError with code `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (job := self.job(job_id)).state in ("queued", "running"):
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(0, "timeout", f"job {job_id} still {job.state} after {timeout:g} s")
            time.sleep(poll)
        return job

    def search(self, name: str, q: str, top_k: int = 10, model: str | None = None) -> SearchAnswer:
        query = parse.urlencode({"q": q, "top_k": top_k, **({"model": model} if model is not None else {})})
        return self._call(SearchAnswer, "GET", f"/v1/collections/{parse.quote(name)}/search?{query}")

    def analyze_collection(
        self, name: str, vocabularies: Iterable[str] | None = None, top_k: int | None = None, model: str | None = None
    ) -> Iterator[AnalysisRow]:
        """The rows of the server's streamed analysis, as they arrive (scored with `model`'s embeddings)."""
        body: dict[str, Any] = {} if model is None else {"model": model}
        if vocabularies is not None:
            body["vocabularies"] = vocabularies if isinstance(vocabularies, str) else list(vocabularies)
        if top_k is not None:
            body["top_k"] = top_k
        req = self._request("POST", f"/v1/collections/{parse.quote(name)}/analyze", json.dumps(body).encode(), "application/json")
        try:
            resp = request.urlopen(req, timeout=self.timeout)
        except error.HTTPError as exc:
            with exc:
                raise _api_error(exc) from None
        except (error.URLError, ConnectionError) as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None
        with resp:
            for line in resp:
                if line.strip():
                    yield AnalysisRow.model_validate_json(line)

    def annotations(self, name: str, vocabularies: Iterable[str] | None = None, top_k: int | None = None,
                    min_probability: float | None = None, manifest: str | None = None, regions: bool = False,
                    canvas: str | None = None) -> dict[str, Any]:
        """A IIIF Presentation 3 AnnotationPage (JSON-LD, as a dict): of the pictures read from `manifest`,
        else of those read from no manifest (whose `seeAlso` names the manifests' pages); with `canvas`, of that
        canvas of `manifest` only."""
        args: dict[str, Any] = {}
        if vocabularies is not None:
            args["vocabularies"] = vocabularies if isinstance(vocabularies, str) else ",".join(vocabularies)
        for key, value in (("top_k", top_k), ("min_probability", min_probability), ("manifest", manifest), ("canvas", canvas)):
            if value is not None:
                args[key] = value
        if regions:
            args["regions"] = "true"
        query = f"?{parse.urlencode(args)}" if args else ""
        page = self._call(AnnotationPageDocument, "GET", f"/v1/collections/{parse.quote(name)}/annotations{query}")
        return page.model_dump(mode="json", by_alias=True, exclude_none=True)

    def review(self, name: str, sha256: str, vocabulary: str, phrase: str, verdict: str, note: str | None = None) -> ReviewInfo:
        """Record a person's verdict (`accepted` or `rejected`) on a term for a picture of collection `name`."""
        body: dict[str, Any] = {"vocabulary": vocabulary, "phrase": phrase, "verdict": verdict}
        if note is not None:
            body["note"] = note
        path = f"/v1/collections/{parse.quote(name)}/pictures/{parse.quote(sha256)}/review"
        return self._call(ReviewAnswer, "POST", path, json_body=body).review

    def delete_collection(self, name: str) -> CollectionAnswer:
        return self._call(CollectionAnswer, "DELETE", f"/v1/collections/{parse.quote(name)}")

    # -- custom vocabularies (need a token) -----------------------------------------------------
    def create_vocabulary(
        self, name: str, phrases: Sequence[Any] = (), description: str | None = None, template: str | None = None,
        private: bool = False,
    ) -> WriteAnswer:
        body: dict[str, Any] = {"name": name, "phrases": list(phrases)}
        if description is not None:
            body["description"] = description
        if template is not None:
            body["template"] = template
        if private:
            body["private"] = True
        return self._call(WriteAnswer, "POST", "/v1/vocabularies", json_body=body, retry=False)

    def add_phrases(self, name: str, phrases: Sequence[Any]) -> WriteAnswer:
        return self._call(WriteAnswer, "POST", f"/v1/vocabularies/{parse.quote(name)}/phrases", json_body={"phrases": list(phrases)})

    def remove_phrases(
        self, name: str, terms: Sequence[str] | None = None, external_ids: Sequence[str] | None = None
    ) -> WriteAnswer:
        body: dict[str, Any] = {}
        if terms is not None:
            body["terms"] = list(terms)
        if external_ids is not None:
            body["external_ids"] = list(external_ids)
        return self._call(WriteAnswer, "DELETE", f"/v1/vocabularies/{parse.quote(name)}/phrases", json_body=body)

    def delete_vocabulary(self, name: str) -> WriteAnswer:
        return self._call(WriteAnswer, "DELETE", f"/v1/vocabularies/{parse.quote(name)}")

    # -- access (an admin key) -------------------------------------------------------------------
    def keys(self) -> list[KeyInfo]:
        return self._call(KeyList, "GET", "/v1/keys").keys

    def create_key(self, name: str, scopes: Sequence[str], collections: Sequence[str] | None = None,
                   vocabularies: Sequence[str] | None = None, expires: str | None = None) -> KeyCreated:
        """A new key; its `secret` is in this answer only."""
        body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
        for field, value in (("collections", collections), ("vocabularies", vocabularies), ("expires", expires)):
            if value is not None:
                body[field] = value if isinstance(value, str) else list(value)
        return self._call(KeyCreated, "POST", "/v1/keys", json_body=body, retry=False)

    def revoke_key(self, name: str) -> KeyAnswer:
        return self._call(KeyAnswer, "DELETE", f"/v1/keys/{parse.quote(name)}")

    def audit(self, since: str | None = None, after: int = 0, limit: int = 100) -> AuditList:
        query = parse.urlencode({k: v for k, v in (("since", since), ("after", after), ("limit", limit)) if v is not None})
        return self._call(AuditList, "GET", f"/v1/audit?{query}")

    # -- transport ------------------------------------------------------------------------------
    def _call(
        self,
        model: type[M],
        method: str,
        path: str,
        json_body: Any = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        fields: list[tuple[str, str]] | None = None,
        retry: bool = True,
    ) -> M:
        data: bytes | None = None
        ctype: str | None = None
        if files is not None:
            data, ctype = _multipart(fields or [], files)
        elif json_body is not None:
            data, ctype = json.dumps(json_body, ensure_ascii=False).encode("utf-8"), "application/json"
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            req = self._request(method, path, data, ctype)
            try:
                with request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                break
            except error.HTTPError as exc:
                with exc:  # the error answer holds the connection until closed
                    failure = _api_error(exc)
                if exc.code in RETRY_STATUSES and attempt + 1 < attempts:
                    time.sleep(self._delay(attempt, exc.headers.get("Retry-After")))
                    continue
                raise failure from None
            except TimeoutError:
                raise ApiError(0, "timeout", f"{self.url} did not answer {method} {path} within {self.timeout:g} s") from None
            except (error.URLError, ConnectionError) as exc:
                if attempt + 1 < attempts:
                    time.sleep(self._delay(attempt, None))
                    continue
                reason = getattr(exc, "reason", exc)
                raise ApiError(0, "unreachable", f"cannot reach {self.url}: {reason}") from None
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise ApiError(0, "bad_answer", f"the server's answer to {method} {path} is not what the API says: {exc}") from None

    def _request(self, method: str, path: str, data: bytes | None, ctype: str | None) -> request.Request:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if ctype:
            headers["Content-Type"] = ctype
        return request.Request(self.url + path, data=data, headers=headers, method=method)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(MAX_RETRY_AFTER, max(0.0, float(retry_after)))
            except ValueError:
                try:
                    return min(MAX_RETRY_AFTER, max(0.0, parsedate_to_datetime(retry_after).timestamp() - time.time()))
                except (TypeError, ValueError):
                    pass
        return self.backoff * (2**attempt) * (0.5 + random.random() / 2)


def _api_error(exc: error.HTTPError) -> ApiError:
    raw = exc.read()
    try:
        body = json.loads(raw.decode("utf-8"))
        return ApiError(body.get("status", exc.code), body.get("code", "error"), body.get("error", ""))
    except (ValueError, AttributeError):
        return ApiError(exc.code, "http_error", raw[:200].decode("utf-8", "replace"))


def _fields(vocabularies: Iterable[str] | None, top_k: int | None, model: str | None = None) -> list[tuple[str, str]]:
    fields = [] if model is None else [("model", model)]
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
