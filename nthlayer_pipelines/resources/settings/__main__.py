"""`python -m nthlayer_pipelines.resources.settings`: print the README's table of variables (Markdown);
`--readme README.md` rewrites the table between the README's markers instead (`make settings-table`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nthlayer_pipelines.resources.settings.table import render_table, write_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nthlayer_pipelines.resources.settings")
    parser.add_argument("--readme", type=Path, help="rewrite this file's table (between its markers)")
    args = parser.parse_args(argv)
    if args.readme is None:
        print(render_table(), end="")
    elif write_table(args.readme):
        print(f"{args.readme}: the settings table is rewritten from the model")
    else:
        print(f"{args.readme}: the settings table already matches the model")


if __name__ == "__main__":
    main()
