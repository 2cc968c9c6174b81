"""Make the console's screenshots in docs/img/console/ (docs/console.md shows them).

The browser tests take them at the steps they check (sign-in, the datasets, a
dataset's burn-down, a query's answer and its refusal, a model's page, the
trail verified, an entry's proof, access, and the dataset page 390 px wide):
this runs ``pytest tests/browser --screenshots DIR``, so a screenshot is only
written by a test that passed that far. Needs Debian's chromium (``make
browser``) and the dev extra. Usage::

    .venv/bin/python scripts/console_screenshots.py [DIR]
"""  # noqa: INP001

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = [
    "sign-in", "datasets", "dataset", "query-answer", "query-refused", "model",
    "trail-verified", "trail-entry-proof", "access", "dataset-390px",
]  # fmt: skip


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else ROOT / "docs" / "img" / "console"
    command = [
        sys.executable, "-m", "pytest", "tests/browser", "-q", "-n", "0",
        "-p", "no:cacheprovider", "--screenshots", str(directory),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, check=False)  # noqa: S603 - our own test suite
    missing = [name for name in EXPECTED if not (directory / f"{name}.png").is_file()]
    for name in EXPECTED:
        path = directory / f"{name}.png"
        if path.is_file():
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "  # noqa: T201
                  f"{path.stat().st_size // 1024} KB")  # fmt: skip
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)  # noqa: T201
    return done.returncode or (1 if missing else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
