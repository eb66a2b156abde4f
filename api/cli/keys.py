"""`opsledger keys`: API keys, stored as hashes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from api.cli.common import err, out
from api.cli.common import fail as _fail
from api.cli.common import ledger as _ledger
from store.keys import SCOPES, create_key, list_keys, revoke_key
from store.timefmt import format_us

keys_app = typer.Typer(
    help="API keys (only their hashes are stored).",
    epilog="Example: `opsledger keys create --name ci --scope write`",
    no_args_is_help=True,
)


@keys_app.command("create", epilog="Example: `opsledger keys create --name grafana --scope read`")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key, e.g. who uses it.")],
    scope: Annotated[
        str, typer.Option(help="read, write, admin (admin ⊇ write ⊇ read) or query (read + SQL).")
    ],
    replace: Annotated[
        bool, typer.Option(help="Revoke active keys with the same name first.")
    ] = False,
) -> None:
    """Create an API key and print its token alone on stdout (it is shown only once)."""
    if scope not in SCOPES:
        raise _fail(f"--scope must be one of {', '.join(SCOPES)}", 2)
    try:
        key, token = create_key(_ledger().engine, name, scope, replace=replace)
    except ValueError as exc:
        raise _fail(f"--name: {exc}", 2) from None
    err.print(f"created key {key.key_id} ({key.name}, {key.scope})", highlight=False)
    print(token)


@keys_app.command("list", epilog="Example: `opsledger keys list --all`")
def keys_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked and expired keys.")] = False,
) -> None:
    """List API keys (ids, names, scopes, expiry; never tokens)."""
    table = Table("key id", "name", "scope", "created", "expires", "revoked")
    for k in list_keys(_ledger().engine, include_revoked=all_):
        table.add_row(
            k.key_id,
            k.name,
            k.scope,
            format_us(k.created_at_us),
            format_us(k.expires_at_us) if k.expires_at_us else "",
            format_us(k.revoked_at_us) if k.revoked_at_us else "",
        )
    out.print(table)


@keys_app.command("revoke", epilog="Example: `opsledger keys revoke 3f9a1c2b7d4e`")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id from `keys list`.")],
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    if not revoke_key(_ledger().engine, key_id):
        raise _fail(f"no active key with id {key_id!r}")
    err.print(f"revoked {key_id}")
