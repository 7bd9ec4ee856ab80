"""`clip-gaze keys` and `clip-gaze audit`: API keys and the audit trail, on the store itself (so an admin
can make the first key before the server runs). Thin: `indexer.store.keys` and `indexer.store.audit` do
the work, `indexer.schema.access` checks the input as the API does."""

from __future__ import annotations

from typing import Any

import click

from .cli_common import domain_errors, load_settings, say

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields as in the REST answer).")
CLI_CALLER = "(cli)"  # how the audit names a change made here


def _store() -> Any:
    from indexer.store.phrase_store import Store

    return Store(load_settings().home)


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _described(info: Any) -> str:
    grants = "".join(f"; {kind}: {', '.join(names) or '(none)'}" for kind, names in
                     (("collections", info.collections), ("vocabularies", info.vocabularies)) if names is not None)
    until = f"; expires {info.expires_at}" if info.expires_at else ""
    used = f"; last used {info.last_used_at}" if info.last_used_at else ""
    return f"{info.name} [{info.state}] scopes {','.join(info.scopes)}{grants}{until}{used}"


@click.group()
def keys() -> None:
    """API keys: who may call the service, with which scopes, on which private collections.

    \b
    Scopes: read (the GETs), analyze (the computing POSTs), write (vocabularies,
    collections, sources), admin (keys and the audit trail; every scope, every
    private collection). Send a key as 'Authorization: Bearer <secret>'.

    \b
    Example:
        clip-gaze keys create admin --scopes admin
    """


@keys.command("create")
@click.argument("name")
@click.option("--scopes", "-s", required=True, help="Comma-separated: read, analyze, write, admin.")
@click.option("--collections", "-c", default=None, help="Comma-separated collections it is granted: the private ones it sees, the only ones it changes.")
@click.option("--vocabularies", default=None, help="Comma-separated vocabularies it is granted, as for --collections.")
@click.option("--expires", "-e", default=None, help="How long it lasts (90d, 12h, 2w) or until when (2027-01-31).")
@JSON_OPTION
@domain_errors
def keys_create(name: str, scopes: str, collections: str | None, vocabularies: str | None, expires: str | None,
                as_json: bool) -> None:
    """Create key NAME and print its secret, once (only a hash of it is kept).

    \b
    Examples:
        clip-gaze keys create admin --scopes admin
        clip-gaze keys create cataloguer --scopes read,analyze,write --collections unpublished --expires 90d
    """
    from indexer.schema import parse
    from indexer.schema.access import CreateKey, KeyCreated
    from indexer.store.audit import Audit
    from indexer.store.keys import KeyStore

    body: dict[str, Any] = {"name": name, "scopes": _split(scopes), "collections": _split(collections),
                            "vocabularies": _split(vocabularies), "expires": expires}
    asked = parse(CreateKey, {k: v for k, v in body.items() if v is not None})
    store = _store()
    key, secret = KeyStore(store).create(asked.name, asked.scopes, asked.collections, asked.vocabularies, asked.expires)
    Audit(store).record(CLI_CALLER, "CLI", f"keys create {name}", 201)
    if as_json:
        say(KeyCreated(key=key.info(), secret=secret).model_dump_json())
    else:
        say(f"created key {_described(key.info())}")
        say(f"secret (shown this once): {secret}")


@keys.command("list")
@JSON_OPTION
@domain_errors
def keys_list(as_json: bool) -> None:
    """List every key: scopes, grants, expiry, last use; never a secret.

    \b
    Example:
        clip-gaze keys list --json
    """
    from indexer.schema.access import KeyList
    from indexer.store.keys import KeyStore

    found = [k.info() for k in KeyStore(_store()).all()]
    if as_json:
        say(KeyList(keys=found).model_dump_json())
    else:
        for info in found:
            say(_described(info))


@keys.command("revoke")
@click.argument("name")
@JSON_OPTION
@domain_errors
def keys_revoke(name: str, as_json: bool) -> None:
    """Revoke key NAME: every server refuses it from its next request.

    \b
    Example:
        clip-gaze keys revoke cataloguer
    """
    from indexer.schema.access import KeyAnswer
    from indexer.store.audit import Audit
    from indexer.store.keys import KeyStore

    store = _store()
    info = KeyStore(store).revoke(name).info()
    Audit(store).record(CLI_CALLER, "CLI", f"keys revoke {name}", 200)
    say(KeyAnswer(key=info, revoked=name).model_dump_json() if as_json else f"revoked key {name}")


@click.command()
@click.option("--since", default=None, help="Entries at or after this ISO 8601 date or time (UTC unless it says otherwise).")
@click.option("--after", default=0, type=click.IntRange(0), help="Entries after this id (next_after of the page before).")
@click.option("--limit", "-n", default=100, show_default=True, type=click.IntRange(1, 1000), help="Entries at most.")
@JSON_OPTION
@domain_errors
def audit(since: str | None, after: int, limit: int, as_json: bool) -> None:
    """The audit trail: every write the service accepted (and keys made here), with the key that made it.

    \b
    Examples:
        clip-gaze audit --since 2026-12-01
        clip-gaze audit --json
    """
    from indexer.schema import parse
    from indexer.schema.access import AuditQuery
    from indexer.store.audit import Audit

    query = parse(AuditQuery, {k: v for k, v in {"since": since, "after": after, "limit": limit}.items() if v is not None})
    found = Audit(_store()).entries(query.since, query.after, query.limit)
    if as_json:
        say(found.model_dump_json())
        return
    for e in found.entries:
        say(f"{e.at}  {e.key}  {e.method} {e.path}  {e.status}" + (f"  from {e.address}" if e.address else ""))
    if found.next_after is not None:
        say(f"(more: --after {found.next_after})")
