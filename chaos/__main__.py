"""`python -m chaos [--sessions N] [--short] [--only NAME]`: exit 0 only if every run is clean."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chaos.suite import FULL_SESSIONS, SHORT_SESSIONS, SuiteOptions, run_suite
from chaos.verify import table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--sessions", type=int, default=None,
                        help=f"calls in the job (default {FULL_SESSIONS}; "
                             f"{SHORT_SESSIONS} with --short)")
    parser.add_argument("--short", action="store_true",
                        help="the CI form: fewer sessions, one SIGKILL")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument("--run-dir", type=Path, help="where the suite's servers and logs live")
    parser.add_argument("--keep", action="store_true", help="keep logs and data afterwards")
    args = parser.parse_args(argv)
    sessions = args.sessions or (SHORT_SESSIONS if args.short else FULL_SESSIONS)
    results = run_suite(SuiteOptions(sessions=sessions, short=args.short, only=args.only,
                                     run_dir=args.run_dir, keep_files=args.keep))
    print(table(results), flush=True)
    return 0 if results and all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
