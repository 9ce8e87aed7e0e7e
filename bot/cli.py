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

import click
import typer
from rich.console import Console
from rich.table import Table

from bot.config import Settings, load_settings
from bot.errors import ConfigError, HelpdeskError
from bot.logs import secrets_of, setup_logging
from kb.errors import KbError

T = TypeVar("T")

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="A Telegram helpdesk bot on a semantic KB."
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
kb_app = typer.Typer(no_args_is_help=True, help="The knowledge base and its search index.")
app.add_typer(db_app, name="db")
app.add_typer(kb_app, name="kb")
customers_app = typer.Typer(no_args_is_help=True, help="What the helpdesk knows about customers.")
app.add_typer(customers_app, name="customers")
suggestions_app = typer.Typer(no_args_is_help=True, help="Agents' answers proposed as KB entries.")
app.add_typer(suggestions_app, name="suggestions")
privacy_app = typer.Typer(no_args_is_help=True, help="Customers' data: export and the retention purge.")
app.add_typer(privacy_app, name="privacy")

out = Console()
err = Console(stderr=True)
log = logging.getLogger("helpdesk")


class _State:
    config: Path | None = None
    verbose: bool = False
    settings: Settings | None = None  # as loaded by the command, for the secrets to mask in logs


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        _State.settings = load_settings(_State.config)
        return _State.settings
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except KbError as exc:
        raise _fail(str(exc), 1) from None
    except HelpdeskError as exc:
        raise _fail(str(exc), 2) from None


def _setup_logging(level: int, settings: Settings | None = None) -> None:
    settings = settings or _State.settings
    secrets = secrets_of(settings) if settings is not None else []  # token, webhook secret, DB password
    setup_logging(logging.DEBUG if _State.verbose else level, secrets=secrets)


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


def _sessions_run(settings: Settings, work: Any) -> Any:
    """Run ``work(sessions)`` against the configured database (migrated first), no model loaded."""
    from kb import db

    async def run() -> Any:
        await db.upgrade(settings.database.url)
        engine = db.create_engine(settings.database.url)
        try:
            return await work(db.session_factory(engine))
        finally:
            await engine.dispose()

    return _run(run())


@kb_app.command("list")
def kb_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the articles as JSON.")] = False,
    status: Annotated[str | None, typer.Option(help="Only draft, published or retired articles.")] = None,
) -> None:
    """List the articles: key, status, languages, current version, title."""
    from kb.articles import list_articles
    from kb.models import ArticleStatus

    settings = _settings()
    _setup_logging(logging.WARNING)
    try:
        wanted = ArticleStatus(status) if status else None
    except ValueError:
        raise _fail(f"--status must be one of: {', '.join(s.value for s in ArticleStatus)}", 2) from None
    articles = _sessions_run(settings, lambda sessions: list_articles(sessions, status=wanted))
    if as_json:
        print(json.dumps([a.as_dict() for a in articles], ensure_ascii=False))
        return
    table = Table("key", "status", "lang", "v", "title", "updated")
    for a in articles:
        table.add_row(
            a.key,
            a.status,
            ",".join(a.languages) or "-",
            str(a.current_version or "-"),
            a.title,
            a.updated_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)
    out.print(f"{len(articles)} article(s)")


@kb_app.command("show")
def kb_show(
    key: Annotated[str, typer.Argument(help="The article's key (see `helpdesk kb list`).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the article and its history as JSON.")
    ] = False,
) -> None:
    """Show an article: its current version(s) and the whole history."""
    from kb.articles import show_article

    settings = _settings()
    _setup_logging(logging.WARNING)
    article = _sessions_run(settings, lambda sessions: show_article(sessions, key))
    if as_json:
        print(json.dumps(article.as_dict(), ensure_ascii=False))
        return
    out.print(
        f"[bold]{article.key}[/] ({article.status}) tags: {', '.join(article.tags) or '-'}", highlight=False
    )
    for version in (v for v in article.versions if v.is_current):
        out.print(f"\n[bold]v{version.number} [{version.language}] {version.question}[/]", highlight=False)
        if version.alt_questions:
            out.print("also: " + " | ".join(version.alt_questions), highlight=False)
        out.print(version.answer, highlight=False, markup=False)
        out.print(f"[dim]source: {version.source}[/]", highlight=False)
    table = Table("v", "lang", "current", "author", "created", "question", "hash", title="history")
    for v in article.versions:
        table.add_row(
            str(v.number),
            v.language,
            "yes" if v.is_current else "",
            v.author,
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.question,
            v.content_hash[:8],
        )
    out.print(table)


@kb_app.command("rollback")
def kb_rollback(
    key: Annotated[str, typer.Argument(help="The article's key.")],
    version: Annotated[int, typer.Argument(help="The version to bring back.")],
    lang: Annotated[
        str | None, typer.Option(help="Which language's history (default: the article's).")
    ] = None,
) -> None:
    """Make an older version current again (recorded as a new version)."""
    from kb.articles import rollback

    settings = _settings()
    _setup_logging(logging.WARNING)
    number = _sessions_run(settings, lambda sessions: rollback(sessions, key, version, language=lang))
    out.print(f"{key}: version {version} is current again, as version {number}")


@kb_app.command("retire")
def kb_retire(key: Annotated[str, typer.Argument(help="The article's key.")]) -> None:
    """Stop answering from an article; it stays in the history (re-ingest or rollback revives it)."""
    from kb.articles import retire

    settings = _settings()
    _setup_logging(logging.WARNING)
    changed = _sessions_run(settings, lambda sessions: retire(sessions, key))
    out.print(f"{key}: retired" if changed else f"{key} was already retired")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    keep_missing: Annotated[
        bool, typer.Option("--keep-missing", help="Keep entries that vanished from a re-ingested file.")
    ] = False,
    author: Annotated[str, typer.Option(help="Recorded as the author of new versions.")] = "ingest",
) -> None:
    """Ingest FAQ documents into the knowledge base (safe to re-run)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bot.runtime import ingest_options, open_services
    from ingest.pipeline import IngestReport, collect_files, ingest_paths

    settings = _settings()
    _setup_logging(logging.WARNING)
    options = ingest_options(settings, keep_missing=keep_missing, author=author)
    total = len(collect_files(paths)[0])

    async def run() -> IngestReport:
        async with open_services(settings, sync=False) as services:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                disable=as_json or total < 2,
            ) as progress:
                task = progress.add_task("ingesting", total=total)

                def on_file(path: Path) -> None:
                    progress.update(task, advance=1, description=f"ingesting {path.name}")

                report = await ingest_paths(
                    paths,
                    sessions=services.sessions,
                    encoder=services.encoder,
                    options=options,
                    on_file=on_file,
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


FINDINGS_SHOWN = 15


def _print_ingest(report: Any) -> None:
    for failure in report.failed:
        where = f"{failure.path}:{failure.line}" if failure.line else failure.path
        err.print(f"[red]failed[/] {where}: {failure.error}", highlight=False, soft_wrap=True)
    for skipped in report.skipped:
        out.print(f"[dim]skipped {skipped.path} ({skipped.reason})[/]", highlight=False, soft_wrap=True)
    if len(report.files) > 1:
        table = Table("file", "added", "updated", "unchanged", "retired", "status")
        for f in report.files:
            status = "[red]failed[/]" if f.failed else "ok"
            table.add_row(f.path, str(f.added), str(f.updated), str(f.unchanged), str(f.retired), status)
        out.print(table)
    for warning in (w for f in report.files for w in f.warnings):
        out.print(f"[yellow]warning[/] {warning}", highlight=False, soft_wrap=True)
    for merged in report.merged:
        where = f"{merged.path}:{merged.line}" if merged.line else merged.path
        out.print(f"[yellow]duplicate[/] {where}: {merged.key} repeats {merged.into} word for word (merged)")
    findings = report.findings
    for pair in findings.near_duplicates[:FINDINGS_SHOWN]:
        out.print(
            f"[yellow]near-duplicate[/] {pair.similarity:.2f}: {pair.first} ~ {pair.second}",
            highlight=False,
            soft_wrap=True,
        )
    if len(findings.near_duplicates) > FINDINGS_SHOWN:
        out.print(
            f"... and {len(findings.near_duplicates) - FINDINGS_SHOWN} more near-duplicate pairs (--json)"
        )
    for contradiction in findings.contradictions[:FINDINGS_SHOWN]:
        out.print(
            f"[yellow]possible contradiction[/]: {contradiction.question!r} is answered differently by "
            + ", ".join(contradiction.keys),
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"retired {report.retired}, skipped {len(report.skipped)}, failed {len(report.failed)} file(s)"
    )


@app.command()
def ask(
    text: Annotated[str, typer.Argument(help="The customer's question.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    lang: Annotated[str | None, typer.Option(help="The customer's language.")] = None,
) -> None:
    """Show what the bot would do with a question: the decision and the top hits."""
    from bot.runtime import open_services
    from kb.decision import Decision, Thresholds, decide

    settings = _settings()
    _setup_logging(logging.WARNING)
    if not text.strip():
        raise _fail("the question is empty", 2)

    async def run() -> tuple[Decision, int, str | None, bool, Thresholds]:
        async with open_services(settings) as services:
            kb, thresholds = services.kb, services.thresholds
            hits = await kb.search(text, k=5, language=lang)
            cross_lingual = kb.cross_lingual(text, language=lang)
            decision = decide(hits, thresholds, cross_lingual=cross_lingual)
            return decision, kb.size, kb.language_of(text, language=lang), cross_lingual, thresholds

    decision, size, language, cross_lingual, thresholds = _run(run())
    suggest = thresholds.suggest_for(cross_lingual=cross_lingual)
    if size == 0:  # on stderr: --json's output stays one JSON object
        err.print(
            "[yellow]the knowledge base is empty[/]: add entries with `helpdesk ingest FILE...` "
            "(examples/faq.md is a sample)",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        print(
            json.dumps(
                {
                    "decision": decision.action.value,
                    "chosen": [h.article_key for h in decision.chosen],
                    "language": language,
                    "cross_lingual": cross_lingual,
                    "suggest_threshold": suggest,
                    "hits": [{**h.as_log(), "title": h.title} for h in decision.hits],
                },
                ensure_ascii=False,
            )
        )
        return
    chosen = ", ".join(h.title for h in decision.chosen) or "-"
    out.print(f"[bold]{decision.action.value}[/]: {chosen}", highlight=False)
    read = f"taken to be in {language}" if language else "language not told"
    other = f", not the KB's {settings.kb.default_language}" if cross_lingual else ""
    lead = ""
    if thresholds.margin < 1:
        lead = f" (or from {thresholds.floor:.2f} with a lead of {thresholds.margin:.2f})"
    out.print(
        f'{read}{other}: answer from {thresholds.answer:.2f}{lead}, "did you mean" from {suggest:.2f}',
        highlight=False,
        soft_wrap=True,
    )
    table = Table("score", "article", "v", "title", "matched")
    for hit in decision.hits:
        table.add_row(f"{hit.score:.3f}", hit.article_key, str(hit.version), hit.title, hit.matched)
    out.print(table)


@app.command("eval")
def evaluate(
    directory: Annotated[
        Path,
        typer.Argument(
            help="A folder with queries.jsonl and faqs.jsonl (or documents.txt: FAQ files, a path per line)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Measure retrieval on a labelled set, in a throwaway KB built by the normal ingest."""
    from bot.evaluation import check_labels, eval_sources, throwaway_kb
    from kb.evaluation import evaluate as run_eval
    from kb.evaluation import read_queries

    settings = _settings()
    _setup_logging(logging.WARNING)
    queries_file = directory / "queries.jsonl"
    try:
        sources = eval_sources(directory)
        if not queries_file.is_file():
            raise HelpdeskError(f"{queries_file} not found (eval needs it)")
        queries = read_queries(queries_file)
    except (HelpdeskError, ValueError) as exc:
        raise _fail(str(exc), 2) from None

    async def run() -> dict[str, Any]:
        async with throwaway_kb(settings, sources) as services:
            await check_labels(services, queries, queries_file)
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
    done = figures["in_scope"]
    out.print(
        f"at the thresholds: answered {done['answered_right_rate'] + done['answered_wrong_rate']:.1%} "
        f'({done["answered_right_rate"]:.1%} right), "did you mean" with the right entry '
        f"{done['offered_right_rate']:.1%} (without it {done['offered_wrong_rate']:.1%}), "
        f"escalated {done['escalated_rate']:.1%}"
    )
    oos = figures["out_of_scope"]
    if oos["n"]:
        out.print(f"out of scope: {oos['n']} queries, answered (wrongly) {oos['answered_rate']:.1%}")
    for lang, row in figures["by_lang"].items():
        out.print(
            f"  {lang}: n={row['n']} Recall@1 {row['recall_at_1']:.3f} MRR@10 {row['mrr_at_10']:.3f}  "
            f"answered {row['answered_right_rate'] + row['answered_wrong_rate']:.0%} "
            f"escalated {row['escalated_rate']:.0%}"
        )
    lat = figures["latency_ms"]
    out.print(f"latency per query: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms")


@customers_app.command("list")
def customers_list(
    search: Annotated[str | None, typer.Option(help="Match name, @username or Telegram id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the customers as JSON.")] = False,
) -> None:
    """Customers, most recently seen first."""
    from kb.customers import list_customers

    settings = _settings()
    _setup_logging(logging.WARNING)
    rows = _sessions_run(settings, lambda sessions: list_customers(sessions, search=search))
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("id", "telegram id", "name", "username", "lang", "last seen", "conv.", "tickets")
    for c in rows:
        username = f"@{c['username']}" if c["username"] else ""
        last_seen = c["last_seen"][:16].replace("T", " ")
        counts = (str(c["conversations"]), str(c["tickets"]))
        table.add_row(
            str(c["id"]), str(c["telegram_id"]), c["name"], username, c["language"] or "", last_seen, *counts
        )
    out.print(table)
    out.print(f"{len(rows)} customer(s)")


@customers_app.command("show")
def customers_show(
    ref: Annotated[int, typer.Argument(help="The customer's id (or Telegram id).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile and history as JSON.")] = False,
) -> None:
    """One customer's profile and whole history: conversations, answers, feedback, tickets, CSAT."""
    from kb.customers import customer_profile

    settings = _settings()
    _setup_logging(logging.WARNING)
    profile = _sessions_run(settings, lambda sessions: customer_profile(sessions, ref))
    if profile is None:
        raise _fail(f"no customer with id or Telegram id {ref} (see `helpdesk customers list`)", 1)
    if as_json:
        print(json.dumps(profile, ensure_ascii=False))
        return
    username = f" @{profile['username']}" if profile["username"] else ""
    header = f"{profile['name']}{username} (id {profile['id']}, Telegram {profile['telegram_id']})"
    out.print(header, style="bold", highlight=False, markup=False)
    first_seen, last_seen = (profile[k][:16].replace("T", " ") for k in ("first_seen", "last_seen"))
    seen = f"first seen {first_seen}, last seen {last_seen}"
    tags = ", ".join(profile["tags"]) or "-"
    out.print(f"language {profile['language'] or '-'}, {seen}, tags: {tags}", highlight=False, markup=False)
    if profile["notes"]:
        out.print(f"notes: {profile['notes']}", highlight=False, markup=False)
    for ticket in profile["tickets"]:
        csat = f", CSAT {ticket['csat']}" if ticket["csat"] else ""
        line = (
            f"ticket #{ticket['id']} {ticket['state']} ({ticket['reason']}{csat}): {ticket['question'] or ''}"
        )
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    for conversation in profile["conversations"]:
        out.rule(f"conversation {conversation['id']} · {conversation['started_at'][:16]}")
        for message in conversation["messages"]:
            out.print(_describe_message(message), highlight=False, markup=False, soft_wrap=True)


def _describe_message(m: dict[str, Any]) -> str:
    text = m["text"] if m["content_type"] == "text" or m["text"] else f"[{m['content_type']}]"
    details = [part for part in (m["decision"], m["article"]) if part]
    if m["score"] is not None:
        details.append(f"{m['score']:.2f}")
    if m["feedback"]:
        details.append(m["feedback"])
    suffix = f"  [{' · '.join(details)}]" if details else ""
    return f"{m['time'][11:16]} {m['author']:>8}: {text}{suffix}"


@app.command()
def gaps(
    since: Annotated[int, typer.Option("--since", help="Days back from now.", min=1, max=36500)] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
    suggest: Annotated[
        bool,
        typer.Option("--suggest", help="Propose groups that agents answered as suggestions for editors."),
    ] = False,
) -> None:
    """Questions the KB could not answer (no answer, "didn't help", escalated), grouped by meaning."""
    from bot.runtime import open_services
    from kb.gaps import knowledge_gaps

    settings = _settings()
    _setup_logging(logging.WARNING)

    async def run() -> list[dict[str, Any]]:
        async with open_services(settings, sync=False) as services:
            return await knowledge_gaps(services.sessions, services.encoder, since_days=since)

    groups = _run(run())
    if suggest:
        from kb.suggestions import suggest_from_gaps

        created = _sessions_run(settings, lambda sessions: suggest_from_gaps(sessions, groups))
        err.print(f"{len(created)} new suggestion(s) for editors: {created or '-'}")
    if as_json:
        print(json.dumps(groups, ensure_ascii=False))
        return
    if not groups:
        out.print(f"no gaps in the last {since} days")
        return
    for number, group in enumerate(groups, start=1):
        out.rule(f"#{number}: {group['customers']} customer(s), asked {group['asked']} time(s)")
        for example in group["examples"]:
            out.print(f"  • {example}", highlight=False, markup=False, soft_wrap=True)
        if group["article_tried"]:
            out.print(f"  tried: {group['article_tried']}", highlight=False, markup=False)
        for answer in group["agent_answers"]:
            out.print(f"  agent answered: {answer}", highlight=False, markup=False, soft_wrap=True)


@suggestions_app.command("list")
def suggestions_list(
    status: Annotated[str, typer.Option(help="pending, approved, rejected or all.")] = "pending",
    as_json: Annotated[bool, typer.Option("--json", help="Print the suggestions as JSON.")] = False,
) -> None:
    """Suggestions waiting for an editor (or all of them)."""
    from kb.models import SuggestionStatus
    from kb.suggestions import list_suggestions

    settings = _settings()
    _setup_logging(logging.WARNING)
    try:
        wanted = None if status == "all" else SuggestionStatus(status)
    except ValueError:
        raise _fail("--status must be pending, approved, rejected or all", 2) from None
    rows = _sessions_run(settings, lambda sessions: list_suggestions(sessions, status=wanted))
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("id", "status", "question", "answer", "ticket")
    for row in rows:
        answer = row["answer"] if len(row["answer"]) <= 60 else row["answer"][:59] + "…"
        table.add_row(str(row["id"]), row["status"], row["question"], answer, str(row["ticket_id"] or "-"))
    out.print(table)


@suggestions_app.command("show")
def suggestions_show(suggestion_id: Annotated[int, typer.Argument(help="The suggestion's id.")]) -> None:
    """One suggestion in full."""
    from kb.suggestions import get_suggestion

    settings = _settings()
    _setup_logging(logging.WARNING)
    row = _sessions_run(settings, lambda sessions: get_suggestion(sessions, suggestion_id))
    out.print(f"#{row['id']} ({row['status']}), ticket {row['ticket_id'] or '-'}", highlight=False)
    out.print(f"Q: {row['question']}", highlight=False, markup=False)
    out.print(f"A: {row['answer']}", highlight=False, markup=False)


SEPARATOR = "\n--- answer below, question above ---\n"


@suggestions_app.command("approve")
def suggestions_approve(
    suggestion_id: Annotated[int, typer.Argument(help="The suggestion's id.")],
    edit: Annotated[bool, typer.Option("--edit", help="Edit question and answer in $EDITOR first.")] = False,
    editor: Annotated[str | None, typer.Option(help="Recorded as the author (default: $USER).")] = None,
) -> None:
    """Turn a suggestion into a KB entry (live in running bots within seconds)."""
    import getpass

    from bot.runtime import open_services
    from kb.suggestions import approve, get_suggestion

    settings = _settings()
    _setup_logging(logging.WARNING)
    question = answer = None
    if edit:
        row = _sessions_run(settings, lambda sessions: get_suggestion(sessions, suggestion_id))
        edited = click.edit(f"{row['question']}{SEPARATOR}{row['answer']}\n")
        if edited is None or SEPARATOR.strip() not in edited:
            raise _fail("nothing approved: the edit was cancelled or the separator line was removed", 1)
        question, answer = (part.strip() for part in edited.split(SEPARATOR.strip(), 1))
        if not question or not answer:
            raise _fail("nothing approved: the question and the answer must not be empty", 1)
    author = editor or getpass.getuser()

    async def run() -> Any:
        async with open_services(settings, sync=False) as services:
            return await approve(
                services.sessions,
                services.encoder,
                suggestion_id,
                editor=author,
                question=question,
                answer=answer,
            )

    approved = _run(run())
    verb = "created" if approved.created else "updated"
    out.print(f"suggestion #{suggestion_id} approved: {verb} {approved.article_key} v{approved.version}")


@suggestions_app.command("reject")
def suggestions_reject(suggestion_id: Annotated[int, typer.Argument(help="The suggestion's id.")]) -> None:
    """Reject a suggestion (it stays listed under --status rejected)."""
    from kb.suggestions import reject

    settings = _settings()
    _setup_logging(logging.WARNING)
    _sessions_run(settings, lambda sessions: reject(sessions, suggestion_id))
    out.print(f"suggestion #{suggestion_id} rejected")


@app.command()
def export(
    what: Annotated[str, typer.Argument(help="customers, conversations or tickets.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
    since: Annotated[
        int | None, typer.Option("--since", help="Days back (default: all).", min=1, max=36500)
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export for a CRM, with stable column names (see README)."""
    import csv
    import io

    from kb.export import COLUMNS, export_rows

    settings = _settings()
    _setup_logging(logging.WARNING)
    if what not in COLUMNS:
        raise _fail(f"nothing to export called {what!r}: choose {', '.join(COLUMNS)}", 2)
    if fmt not in ("csv", "jsonl"):
        raise _fail("--format must be csv or jsonl", 2)
    rows = _sessions_run(settings, lambda sessions: export_rows(sessions, what, since_days=since))
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS[what], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        buffer.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if output is None:
        sys.stdout.write(buffer.getvalue())
    else:
        output.write_text(buffer.getvalue(), encoding="utf-8")
        err.print(f"{len(rows)} {what} written to {output}")


@app.command()
def report(
    since: Annotated[int, typer.Option("--since", help="Days back from now.", min=1, max=36500)] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
) -> None:
    """Service figures: volume, self-service and escalation rates, response times, CSAT, per day."""
    from bot.report_html import render_report
    from kb.analytics import service_report

    settings = _settings()
    _setup_logging(logging.WARNING)
    figures = _sessions_run(settings, lambda sessions: service_report(sessions, since_days=since))
    if html is not None:
        html.write_text(render_report(figures), encoding="utf-8")
    if as_json:
        print(json.dumps(figures))
        return
    first, resolution, csat = figures["first_response"], figures["resolution"], figures["csat"]
    if not figures["conversations"]:
        out.print(f"no conversations in the last {since} days: nothing to report yet (all figures are zero)")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value / 60:.1f} min"

    out.print(
        f"[bold]last {since} days[/]: {figures['conversations']} conversations, {figures['tickets']} tickets"
    )
    out.print(
        f"self-service {pct(figures['self_service_rate'])}, escalation {pct(figures['escalation_rate'])}, "
        f"answer feedback rate {pct(figures['feedback_rate'])}"
    )
    out.print(
        f"first response: median {secs(first['median_s'])}, p90 {secs(first['p90_s'])}; "
        f"resolution: median {secs(resolution['median_s'])}, p90 {secs(resolution['p90_s'])}"
    )
    average = "-" if csat["average"] is None else f"{csat['average']:.2f}"
    out.print(f"CSAT: average {average} from {csat['n']} ratings {csat['distribution']}")
    if html is not None:
        out.print(f"HTML report written to {html}")


@kb_app.command("stats")
def kb_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    since: Annotated[
        int | None, typer.Option("--since", help="Days back (default: all time).", min=1, max=36500)
    ] = None,
) -> None:
    """How useful each article is: shown, helped, didn't help, escalations after it; worst first."""
    from kb.analytics import article_usefulness

    settings = _settings()
    _setup_logging(logging.WARNING)
    rows = _sessions_run(settings, lambda sessions: article_usefulness(sessions, since_days=since))
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("article", "v", "shown", "helped", "didn't help", "escalated after", "self-served")
    for row in rows:
        rate = "-" if row["self_served_rate"] is None else f"{row['self_served_rate']:.0%}"
        table.add_row(
            row["title"], str(row["version"]), str(row["shown"]), str(row["helped"]),
            str(row["not_helped"]), str(row["escalated_after"]), rate,
        )  # fmt: skip
    out.print(table)
    _print_backlog(settings)


def _print_backlog(settings: Settings) -> None:
    """How many live versions still wait for the multilingual model's vectors (``kb.backlog``)."""
    from kb.backlog import backlog_of
    from kb.encoder import deferred_model_ids

    model_ids = deferred_model_ids(
        settings.kb.model, settings.kb.multilingual_model, settings.kb.rerank_model
    )
    if not model_ids:
        return

    async def work(sessions: Any) -> Any:
        async with sessions() as session:
            return await backlog_of(session, model_ids=model_ids)

    for backlog in _sessions_run(settings, work):
        waiting = (
            f"{backlog.pending} waiting (a running bot or the next ingest embeds them)"
            if backlog.pending
            else "none waiting"
        )
        out.print(
            f"vectors of {backlog.model_id}: {backlog.done} of {backlog.live} live versions; {waiting}",
            highlight=False,
        )


@privacy_app.command("purge")
def privacy_purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    days: Annotated[
        int | None,
        typer.Option("--days", help="Override privacy.retention_days.", min=1, max=3650),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Delete conversations older than privacy.retention_days, with what hangs off them."""
    from kb.privacy import purge

    settings = _settings()
    _setup_logging(logging.WARNING)
    retention = days or settings.privacy.retention_days
    if not retention:
        out.print("privacy.retention_days is 0 (keep everything): nothing to purge; --days N to purge anyway")
        return
    erased = _sessions_run(
        settings, lambda sessions: purge(sessions, older_than_days=retention, dry_run=dry_run)
    )
    counts = erased.as_dict()
    counts.pop("kb_changed")
    if as_json:
        print(json.dumps({"dry_run": dry_run, "older_than_days": retention, **counts}))
        return
    verb = "would delete" if dry_run else "deleted"
    shown = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items())
    out.print(f"older than {retention} days: {verb} {shown}", highlight=False)


@privacy_app.command("export")
def privacy_export(
    telegram_id: Annotated[int, typer.Argument(help="The customer's Telegram id.")],
) -> None:
    """Everything stored about one customer, as JSON (what /mydata sends them)."""
    import getpass

    from kb.privacy import export_customer

    settings = _settings()
    _setup_logging(logging.WARNING)

    async def work(sessions: Any) -> Any:
        async with sessions() as session:
            return await export_customer(session, telegram_id=telegram_id, actor=f"cli:{getpass.getuser()}")

    data = _sessions_run(settings, work)
    if data is None:
        raise _fail(f"nothing is stored about Telegram id {telegram_id}", 1)
    print(json.dumps(data, ensure_ascii=False, indent=2))


@app.command()
def run() -> None:
    """Run the bot (long polling, or the webhook with telegram.mode = "webhook") until SIGTERM."""
    from bot.app import run_polling

    settings = _settings()
    if not settings.telegram.token.get_secret_value():
        raise _fail(
            "telegram.token is not set: put it in HELPDESK_TELEGRAM__TOKEN "
            "(or [telegram] token in the config)",
            2,
        )
    _setup_logging(logging.INFO, settings)
    _run(run_polling(settings))


@app.command()
def demo(
    report: Annotated[
        Path | None, typer.Option(help="Where to write the HTML report of the demo conversation.")
    ] = Path("var/demo-report.html"),
) -> None:
    """Ingest the bundled example FAQ, start the sandbox and the bot, play a conversation."""
    from bot.demo import run_demo

    settings = _settings()
    _setup_logging(logging.WARNING)
    _run(run_demo(settings, out, report_path=report))


def main() -> None:
    app()
