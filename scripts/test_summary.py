"""Print one closing line over every JUnit XML file of a test run.

    python scripts/test_summary.py DIR  ->  "summary: 42 passed, 0 failed, 1 skipped"

Exits non-zero when a test failed or no test ran at all.
"""

from __future__ import annotations

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
    folder = Path(sys.argv[1])
    passed = failed = skipped = 0
    for report in sorted(folder.glob("*.xml")):
        p, f, s = count(report)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    print(f"summary: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
