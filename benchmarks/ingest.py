"""Ingest throughput: 10,000 generated entries in, then the same file again (unchanged).

    .venv/bin/python benchmarks/ingest.py [--entries 10000]

Prints entries/s for the first ingest (parse, embed with the bundled model, write, index) and the
wall time of the unchanged re-ingest. Goals: >= 150 entries/s on 2 cores; re-ingest < 10 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script is named like the `ingest` package; keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import csv
import logging
import random
import tempfile
import time

from bot.config import Settings
from bot.runtime import open_services
from ingest.pipeline import IngestOptions, ingest_paths

SUBJECTS = [
    "password",
    "invoice",
    "subscription",
    "account",
    "order",
    "refund",
    "delivery",
    "device",
    "profile",
    "team",
    "export",
    "import",
    "report",
    "backup",
    "login",
    "payment",
    "plan",
    "API key",
]
ACTIONS = [
    "reset",
    "change",
    "cancel",
    "download",
    "delete",
    "share",
    "restore",
    "update",
    "find",
    "move",
    "rename",
    "verify",
    "recover",
    "lock",
    "transfer",
]
PLACES = ["on the web app", "on Android", "on iPhone", "from the desktop app", "for my team",
          "in the admin console", "without email access", "after the trial", "in bulk",
          "via the API"]  # fmt: skip


def generate(path: Path, count: int) -> None:
    rng = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "question", "answer"])
        for i in range(count):
            action, subject, place = rng.choice(ACTIONS), rng.choice(SUBJECTS), rng.choice(PLACES)
            steps = " ".join(
                f"Step {n}: open {rng.choice(SUBJECTS)} settings and choose {rng.choice(ACTIONS)}."
                for n in range(1, rng.randint(2, 6))
            )
            writer.writerow([f"gen-{i:05d}", f"How do I {action} my {subject} {place} (#{i})?", steps])


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="helpdesk-bench-") as tmp:
        data = Path(tmp) / "generated.csv"
        generate(data, count)
        settings = Settings(
            database={"url": f"sqlite+aiosqlite:///{tmp}/bench.db"}, kb={"index_dir": f"{tmp}/index"}
        )
        async with open_services(settings, sync=False) as services:
            options = IngestOptions(detect_languages=True)
            started = time.perf_counter()
            first = await ingest_paths(
                [data], sessions=services.sessions, encoder=services.encoder, options=options
            )
            await services.kb.sync(services.sessions)
            first_seconds = time.perf_counter() - started
            started = time.perf_counter()
            second = await ingest_paths(
                [data], sessions=services.sessions, encoder=services.encoder, options=options
            )
            await services.kb.sync(services.sessions)
            second_seconds = time.perf_counter() - started
    assert first.added == count and second.unchanged == count, (first.as_dict(), second.as_dict())
    print(f"first ingest: {count} entries in {first_seconds:.1f} s = {count / first_seconds:.0f} entries/s")
    print(f"unchanged re-ingest: {second_seconds:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args().entries))
