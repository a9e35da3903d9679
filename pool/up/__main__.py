"""``python -m pool.up up|down`` (what ``ctxpool up``/``ctxpool down`` run)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from pool.errors import CtxpoolError
from pool.settings import Settings
from pool.up.stack import Stack, UpError, down


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctxpool")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--clean", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        if args.command == "down":
            return down(settings)
        return Stack(settings, clean=args.clean).run()
    except ValidationError as exc:
        print(f"ctxpool: invalid settings: {exc}", file=sys.stderr)
        return 2
    except (UpError, CtxpoolError) as exc:
        print(f"ctxpool: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
