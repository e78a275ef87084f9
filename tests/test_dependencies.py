"""The lock file matches pyproject.toml, pins every package with hashes, and the audit of
it fails on a known vulnerability (or, with AUDIT_REQUIRED=1, when nothing could be audited)."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

import pytest

from tests.process import ROOT


def _deps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deps", ROOT / "scripts" / "deps.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["deps"] = module
    spec.loader.exec_module(module)
    return module


deps = _deps()


def test_the_lock_is_current_with_pyprojects_dependencies_or_says_run_dev_lock():
    assert deps.check() == 0, "requirements.lock is out of date: run ./dev lock"


def test_every_locked_package_is_pinned_exactly_with_hashes():
    text = (ROOT / "requirements.lock").read_text()
    entries = re.findall(r"^(\S+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}.*\n)+)", text, re.M)
    names = {name for name, _, _ in entries}

    requirements = [line for line in text.splitlines() if line and line[0].isalnum()]
    assert len(entries) == len(requirements), "a package without == or without hashes"
    assert {"litestar", "msgspec", "aiokafka", "pytest", "schemathesis", "pip-audit"} <= names


def test_the_stamp_changes_when_a_dependency_changes(tmp_path, monkeypatch):
    pyproject = tmp_path / "pyproject.toml"
    original = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(original)
    monkeypatch.setattr(deps, "PYPROJECT", pyproject)
    before = deps.dependencies_hash()
    pyproject.write_text(original + "\n[tool.other]\nx = 1\n")
    assert deps.dependencies_hash() == before, "unrelated settings need no new lock"
    pyproject.write_text(
        original.replace('"anyio==4.16.0",', '"anyio==4.16.0",\n    "six==1.17.0",')
    )

    assert deps.dependencies_hash() != before
    assert deps.check() == 1


VULNERABLE = {
    "dependencies": [
        {"name": "jinja2", "version": "2.4.1", "vulns": [{"id": "PYSEC-2014-8",
                                                          "fix_versions": ["2.7.2"]}]},
        {"name": "anyio", "version": "4.16.0", "vulns": []},
    ]
}  # fmt: skip
CLEAN = {"dependencies": [{"name": "anyio", "version": "4.16.0", "vulns": []}]}
UNREACHABLE = {
    "dependencies": [
        {"name": "anyio", "skip_reason": "Dependency not found on PyPI and could not be audited"}
    ]
}


@pytest.mark.parametrize("ci", [True, False])
def test_a_known_vulnerability_fails_the_audit_naming_it(ci):
    code, message = deps.verdict(VULNERABLE, ci=ci)

    assert code == 1
    assert "jinja2 2.4.1: PYSEC-2014-8 (fixed in 2.7.2)" in message


def test_a_clean_report_passes():
    assert deps.verdict(CLEAN, ci=True) == (
        0,
        "pip-audit: 1 locked packages, no known vulnerabilities",
    )


@pytest.mark.parametrize("report", [UNREACHABLE, {"dependencies": []}, {"error": "boom"}])
def test_an_audit_that_could_not_run_fails_where_required_and_says_skipped_elsewhere(report):
    ci_code, ci_message = deps.verdict(report, ci=True)
    code, message = deps.verdict(report, ci=False)

    assert (ci_code, code) == (1, 0)
    assert "FAILED, nothing audited" in ci_message
    assert "SKIPPED" in message
    assert "not a pass" in message
