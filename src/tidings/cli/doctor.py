"""``tidings doctor``: which extras are installed and which backends answer."""

from __future__ import annotations

import asyncio
import os

import typer
from rich.console import Console
from rich.table import Table

from tidings.probes import LOCAL_URLS, Probe, installed_extras, probe
from tidings.urls import configured_url

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the doctor command to the app."""
    app.command("doctor")(doctor)


def doctor(
    urls: list[str] = typer.Argument(None, help="URLs to probe (default: configured + local)."),
    local: bool = typer.Option(True, help="Also probe the services' usual local addresses."),
) -> None:
    """Show installed extras and whether each backend URL is reachable."""
    console = Console()
    console.print(_extras_table())
    targets = _targets(urls or [], local=local)
    results = asyncio.run(_probe_all(targets))
    console.print(_probe_table(results))
    if not all(r.ok for r in results if r.url in (urls or [])):
        raise typer.Exit(code=1)


def _targets(urls: list[str], *, local: bool) -> list[str]:
    configured = [configured_url()]
    configured += [v for k, v in sorted(os.environ.items()) if _is_capability_url(k)]
    found = [*urls, *configured, *(LOCAL_URLS if local else ())]
    return list(dict.fromkeys(found))


def _is_capability_url(name: str) -> bool:
    return name.startswith("TIDINGS_") and name.endswith("_URL") and name != "TIDINGS_URL"


async def _probe_all(urls: list[str]) -> list[Probe]:
    return list(await asyncio.gather(*(probe(url) for url in urls)))


def _extras_table() -> Table:
    table = Table(title="Optional extras")
    table.add_column("extra")
    table.add_column("installed")
    for extra, ok in installed_extras().items():
        table.add_row(extra, "[green]yes[/]" if ok else f"[yellow]no[/] (tidings[{extra}])")
    return table


def _probe_table(results: list[Probe]) -> Table:
    table = Table(title="Backends")
    for column in ("url", "reachable", "ms", "detail"):
        table.add_column(column)
    for r in results:
        status = "[green]yes[/]" if r.ok else "[red]no[/]"
        table.add_row(_redact(r.url), status, f"{r.millis:.1f}", r.detail)
    return table


def _redact(url: str) -> str:
    """Hide a password in a URL: secrets are never printed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
