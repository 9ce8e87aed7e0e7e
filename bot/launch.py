"""The ``helpdesk`` command's entry point: the CLI imported with the garbage collector paused.

Importing aiogram builds a few hundred pydantic models: the collector, set off again and again
while they pile up, added about a second to every start (:mod:`kb.heap`). The modules live as
long as the process, so they are frozen out of the collector's sight once imported.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    try:
        from bot.cli import main as cli
    finally:
        gc.freeze()
        gc.enable()
    cli()


if __name__ == "__main__":
    main()
