"""The ``helpdesk`` command line (also ``python -m bot``).

Every command reads the configuration first (``--config``, else ``$HELPDESK_CONFIG``, else
built-in defaults); a configuration problem prints one line and exits with status 2.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bot.config import Settings, load_settings
from bot.errors import ConfigError, HelpdeskError
from kb.errors import KbError

T = TypeVar("T")

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="A Telegram helpdesk bot on a semantic KB."
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
kb_app = typer.Typer(no_args_is_help=True, help="The knowledge base and its search index.")
app.add_typer(db_app, name="db")
app.add_typer(kb_app, name="kb")

out = Console()
err = Console(stderr=True)
log = logging.getLogger("helpdesk")


class _State:
    config: Path | None = None
    verbose: bool = False


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings(_State.config)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except KbError as exc:
        raise _fail(str(exc), 1) from None
    except HelpdeskError as exc:
        raise _fail(str(exc), 2) from None


def _setup_logging(level: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if _State.verbose else level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "sentence_transformers", "aiogram.event"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _main(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file (default: $HELPDESK_CONFIG).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _State.config = config
    _State.verbose = verbose


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the latest version."""
    from kb import db

    settings = _settings()
    _setup_logging(logging.WARNING)
    db.upgrade_sync(settings.database.url)
    out.print(f"database is up to date: {settings.database.url}")


@kb_app.command("rebuild")
def kb_rebuild() -> None:
    """Rebuild the search index from the database (embedding what the configured model lacks)."""
    from bot.runtime import open_services

    settings = _settings()
    _setup_logging(logging.WARNING)

    async def rebuild() -> tuple[int, int]:
        async with open_services(settings, sync=False) as services:
            await services.kb.sync(services.sessions, force=True)
            return services.kb.size, services.kb.revision

    size, revision = _run(rebuild())
    out.print(f"index rebuilt in {settings.kb.index_dir}: {size} articles, KB revision {revision}")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Ingest FAQ documents (Markdown, CSV/TSV, JSONL) into the knowledge base."""
    from bot.runtime import open_services
    from ingest.pipeline import IngestReport, ingest_paths

    settings = _settings()
    _setup_logging(logging.WARNING)

    async def run() -> IngestReport:
        async with open_services(settings, sync=False) as services:
            report = await ingest_paths(
                paths,
                sessions=services.sessions,
                encoder=services.encoder,
                default_language=settings.kb.default_language,
            )
            await services.kb.sync(services.sessions)
            return report

    report = _run(run())
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _print_ingest(report)
    if report.failed:
        raise typer.Exit(1)


def _print_ingest(report: Any) -> None:
    for failure in report.failed:
        where = f"{failure.path}:{failure.line}" if failure.line else failure.path
        err.print(f"[red]failed[/] {where}: {failure.error}", highlight=False, soft_wrap=True)
    for skipped in report.skipped:
        out.print(f"[dim]skipped {skipped} (unknown file type)[/]", highlight=False)
    out.print(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"failed {len(report.failed)} file(s)"
    )


@app.command()
def ask(
    text: Annotated[str, typer.Argument(help="The customer's question.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    lang: Annotated[str | None, typer.Option(help="The customer's language.")] = None,
) -> None:
    """Show what the bot would do with a question: the decision and the top hits."""
    from bot.runtime import open_services
    from kb.decision import Decision, decide

    settings = _settings()
    _setup_logging(logging.WARNING)
    if not text.strip():
        raise _fail("the question is empty", 2)

    async def run() -> Decision:
        async with open_services(settings) as services:
            hits = await services.kb.search(text, k=5, language=lang)
            return decide(hits, services.thresholds)

    decision = _run(run())
    if as_json:
        print(
            json.dumps(
                {
                    "decision": decision.action.value,
                    "chosen": [h.article_key for h in decision.chosen],
                    "hits": [{**h.as_log(), "title": h.title} for h in decision.hits],
                },
                ensure_ascii=False,
            )
        )
        return
    chosen = ", ".join(h.title for h in decision.chosen) or "-"
    out.print(f"[bold]{decision.action.value}[/]: {chosen}", highlight=False)
    table = Table("score", "article", "v", "title", "matched")
    for hit in decision.hits:
        table.add_row(f"{hit.score:.3f}", hit.article_key, str(hit.version), hit.title, hit.matched)
    out.print(table)


@app.command("eval")
def evaluate(
    directory: Annotated[Path, typer.Argument(help="A folder with faqs.jsonl and queries.jsonl.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Measure retrieval on a labelled set, in a throwaway KB built by the normal ingest."""
    from bot.evaluation import throwaway_kb
    from kb.evaluation import evaluate as run_eval
    from kb.evaluation import read_queries

    settings = _settings()
    _setup_logging(logging.WARNING)
    faqs, queries_file = directory / "faqs.jsonl", directory / "queries.jsonl"
    for required in (faqs, queries_file):
        if not required.is_file():
            raise _fail(f"{required} not found (eval needs faqs.jsonl and queries.jsonl)", 2)
    try:
        queries = read_queries(queries_file)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None

    async def run() -> dict[str, Any]:
        async with throwaway_kb(settings, faqs) as services:
            return await asyncio.to_thread(run_eval, services.kb, queries, services.thresholds)

    figures = _run(run())
    figures["dataset"] = directory.name
    if as_json:
        print(json.dumps(figures))
        return
    out.print(f"[bold]{directory.name}[/]: {figures['n_in_scope']} in-scope queries")
    out.print(
        f"Recall@1 {figures['recall_at_1']:.3f}  Recall@3 {figures['recall_at_3']:.3f}  "
        f"MRR@10 {figures['mrr_at_10']:.3f}"
    )
    oos = figures["out_of_scope"]
    if oos["n"]:
        out.print(f"out of scope: {oos['n']} queries, answered (wrongly) {oos['answered_rate']:.1%}")
    for lang, row in figures["by_lang"].items():
        out.print(f"  {lang}: n={row['n']} Recall@1 {row['recall_at_1']:.3f} MRR@10 {row['mrr_at_10']:.3f}")
    lat = figures["latency_ms"]
    out.print(f"latency per query: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms")


@app.command()
def run() -> None:
    """Run the bot with long polling against telegram.api_url."""
    from bot.app import run_polling

    settings = _settings()
    if not settings.telegram.token.get_secret_value():
        raise _fail(
            "telegram.token is not set: put it in HELPDESK_TELEGRAM__TOKEN "
            "(or [telegram] token in the config)",
            2,
        )
    _setup_logging(logging.INFO)
    _run(run_polling(settings))


@app.command()
def demo() -> None:
    """Ingest the bundled example FAQ, start the sandbox and the bot, play a conversation."""
    from bot.demo import run_demo

    settings = _settings()
    _setup_logging(logging.WARNING)
    _run(run_demo(settings, out))


def main() -> None:
    app()
