"""Print one closing line over every JUnit XML file of a test run.

    python scripts/test_summary.py DIR [--failed-steps N]
        ->  "summary: 42 passed, 0 failed, 1 skipped"

Failed steps of the run that wrote no report of their own (lint, a scenario that
broke before its verifier) count as failures. Exits non-zero when anything
failed or no test ran at all.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def count(report: Path) -> tuple[int, int, int]:
    """Return (passed, failed, skipped) of one JUnit XML report."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = failed = skipped = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return total - failed - skipped, failed, skipped


def main() -> int:
    """Sum every report under the folder given and print the closing line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--failed-steps", type=int, default=0)
    args = parser.parse_args()
    passed, failed, skipped = 0, args.failed_steps, 0
    for report in sorted(args.folder.glob("*.xml")):
        p, f, s = count(report)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    print(f"summary: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
