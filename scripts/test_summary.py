"""Print one closing line over every JUnit XML file of a test run.

    python scripts/test_summary.py DIR [--failed-steps N]
        ->  "summary: 42 passed, 0 failed, 1 skipped"
    python scripts/test_summary.py --write-junit FILE NAME|STATUS|SECONDS ...
        writes the checks that have no report of their own (lint) as JUnit XML

Failed steps of the run that wrote no report of their own (a scenario that
broke before its verifier, a set-up step) count as failures. Exits non-zero
when anything failed or no test ran at all.
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


def junit(cases: list[str], suite_name: str = "lint") -> ET.ElementTree:
    """Return a JUnit report of checks given as ``name|exit status|seconds``."""
    suite = ET.Element("testsuite", name=suite_name)
    failures = 0
    for case in cases:
        name, status, seconds = case.rsplit("|", 2)
        element = ET.SubElement(suite, "testcase", classname=suite_name, name=name, time=seconds)
        if status != "0":
            failures += 1
            ET.SubElement(element, "failure", message=f"{name} exited with status {status}")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    return ET.ElementTree(suite)


def main() -> int:
    """Sum every report under the folder given and print the closing line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--failed-steps", type=int, default=0)
    parser.add_argument("--write-junit", type=Path, metavar="FILE")
    parser.add_argument("cases", nargs="*", help="with --write-junit: NAME|STATUS|SECONDS")
    args = parser.parse_args()
    if args.write_junit:
        cases = ([str(args.folder)] if args.folder else []) + args.cases
        junit(cases).write(args.write_junit, encoding="unicode")
        return 0
    passed, failed, skipped = 0, args.failed_steps, 0
    for report in sorted(args.folder.glob("*.xml")):
        p, f, s = count(report)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    print(f"summary: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
