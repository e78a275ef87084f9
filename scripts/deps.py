"""The locked dependencies: is requirements.lock current, and does it have known vulnerabilities?

    python scripts/deps.py stamp   after ``uv pip compile``: record which pyproject it locks
    python scripts/deps.py check   fail if pyproject.toml's dependencies changed since the lock
    python scripts/deps.py audit   pip-audit over the lock; fail on a known vulnerability

The lock's first line holds a hash of pyproject.toml's dependency lists (not of
the whole file, so that editing the linters' settings needs no new lock).

The audit asks PyPI's vulnerability service (through pip-audit). When that
service cannot answer (no network, or an index mirror without the JSON API),
nothing was audited: that fails with ``AUDIT_REQUIRED=1`` and otherwise prints a
loud SKIPPED line; it never passes as "no known vulnerabilities".
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
STAMP = "# pyproject dependencies sha256: "


def dependencies_hash() -> str:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    wanted = {
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {
            extra: sorted(deps) for extra, deps in project.get("optional-dependencies", {}).items()
        },
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def stamp() -> int:
    lines = [line for line in LOCK.read_text().splitlines() if not line.startswith(STAMP)]
    LOCK.write_text("\n".join([STAMP + dependencies_hash(), *lines]) + "\n")
    return 0


def check() -> int:
    first = LOCK.read_text().splitlines()[0] if LOCK.exists() else ""
    if first != STAMP + dependencies_hash():
        print(
            "requirements.lock is out of date: pyproject.toml's dependencies changed since it"
            " was made. Run ./dev lock and commit requirements.lock.",
            file=sys.stderr,
        )
        return 1
    return 0


def audit() -> int:
    result = subprocess.run(
        [
            sys.executable, "-m", "pip_audit", "--requirement", str(LOCK), "--require-hashes",
            "--disable-pip", "--format", "json", "--progress-spinner", "off",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        report = {"error": (result.stderr.strip().splitlines() or ["no output"])[-1]}
    # Only where the vulnerability service is known to answer may its silence fail the
    # build (AUDIT_REQUIRED=1); this project's CI machine cannot reach it.
    code, message = verdict(report, ci=bool(os.environ.get("AUDIT_REQUIRED")))
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def verdict(report: dict[str, Any], *, ci: bool) -> tuple[int, str]:
    """The exit code and the message for a pip-audit JSON report."""
    if "error" in report:
        return _not_audited(f"pip-audit failed: {report['error']}", ci=ci)
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    if vulnerable:
        lines = [
            f"{dep['name']} {dep['version']}: {vuln['id']}"
            f" (fixed in {', '.join(vuln.get('fix_versions', [])) or 'no release yet'})"
            for dep in vulnerable
            for vuln in dep["vulns"]
        ]
        lines.append(f"pip-audit: FAILED, {len(vulnerable)} locked packages have known"
                     " vulnerabilities")  # fmt: skip
        return 1, "\n".join(lines)
    if skipped or not deps:
        reason = skipped[0]["skip_reason"] if skipped else "no packages in the report"
        return _not_audited(
            f"{len(skipped)} of {len(deps)} locked packages could not be audited ({reason})", ci=ci
        )
    return 0, f"pip-audit: {len(deps)} locked packages, no known vulnerabilities"


def _not_audited(why: str, *, ci: bool) -> tuple[int, str]:
    if ci:
        return 1, f"pip-audit: FAILED, nothing audited: {why}"
    return 0, (
        f"pip-audit: SKIPPED, the vulnerability service did not answer: {why}."
        " This is not a pass; with AUDIT_REQUIRED=1 it fails."
    )


if __name__ == "__main__":
    commands = {"stamp": stamp, "check": check, "audit": audit}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())
