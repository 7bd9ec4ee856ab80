"""The REST API of access (issue 23): API keys and the audit trail, for admin callers (the guard checks
the `admin` scope each operation declares). Thin views over `indexer.store.keys` and `indexer.store.audit`."""

from __future__ import annotations

from flask import Blueprint, Response, request

from indexer.schema import parse
from indexer.schema.access import AuditQuery, CreateKey, KeyAnswer, KeyCreated, KeyList
from indexer.store.audit import Audit
from indexer.store.keys import KeyStore

from .access import store
from .api import answer, json_body, sent

access_api = Blueprint("access_api", __name__)


@access_api.get("/v1/keys")
def list_keys() -> tuple[Response, int]:
    return answer(KeyList(keys=[k.info() for k in KeyStore(store()).all()]))


@access_api.post("/v1/keys")
def create_key() -> tuple[Response, int]:
    asked = json_body(CreateKey)
    key, secret = KeyStore(store()).create(asked.name, asked.scopes, asked.collections, asked.vocabularies, asked.expires)
    return answer(KeyCreated(key=key.info(), secret=secret), 201)


@access_api.delete("/v1/keys/<name>")
def revoke_key(name: str) -> tuple[Response, int]:
    return answer(KeyAnswer(key=KeyStore(store()).revoke(name).info(), revoked=name))


@access_api.get("/v1/audit")
def audit() -> tuple[Response, int]:
    query = parse(AuditQuery, sent(request.args))
    return answer(Audit(store()).entries(query.since, query.after, query.limit))
