"""The module boundaries hold: checked on the code itself, so a stray import fails the suite."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from bus.messages import Message

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("order", "payment", "inventory", "shipping")


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_import_linter_catches_a_module_importing_another(tmp_path: Path) -> None:
    # The check must be able to fail: copy the tree, add a forbidden import, expect a break.
    import shutil

    for name in ("bus", "checkout", "modules", "web", "pyproject.toml"):
        source = ROOT / name
        target = tmp_path / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    handlers = tmp_path / "modules" / "payment" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\nfrom modules.inventory import db as _stolen\n")
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "Modules are independent BROKEN" in result.stdout


@pytest.mark.parametrize("name", MODULES)
def test_a_module_package_exports_only_its_contract(name: str) -> None:
    package = importlib.import_module(f"modules.{name}")
    contract = importlib.import_module(f"modules.{name}.contract")
    assert set(package.__all__) == set(contract.__all__)
    for message in contract.MESSAGES:
        assert message.TYPE.startswith(f"{name}."), message
        assert message.__doc__, f"{message.TYPE} needs a docstring saying what it promises"


def test_every_message_type_is_unique() -> None:
    types = [
        m.TYPE
        for name in MODULES
        for m in importlib.import_module(f"modules.{name}.contract").MESSAGES
    ]
    assert len(types) == len(set(types))
    assert all(
        issubclass(m, Message)
        for name in MODULES
        for m in importlib.import_module(f"modules.{name}.contract").MESSAGES
    )


@pytest.mark.parametrize("name", MODULES)
def test_each_module_has_its_own_table_registry(name: str) -> None:
    db = importlib.import_module(f"modules.{name}.db")
    bases = [v for k, v in vars(db).items() if k.endswith("Base") and hasattr(v, "metadata")]
    assert len(bases) == 1
    others = [importlib.import_module(f"modules.{other}.db") for other in MODULES if other != name]
    for other in others:
        for value in vars(other).values():
            if hasattr(value, "metadata") and value.__name__.endswith("Base"):
                assert value.metadata is not bases[0].metadata
