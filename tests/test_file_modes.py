"""Files the app creates (SQLite databases, their WAL and shared-memory files, the admin
token) are readable and writable by their owner only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from main import Settings, create_app
from tests.support import DB_NAMES, admin_client, final_order, order_body, place, seed
from web.auth import TOKEN_ENV, TOKEN_FILE

pytestmark = pytest.mark.anyio


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that lets everyone read new files: the app must not rely on the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def modes(data_dir: Path) -> dict[str, str]:
    return {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(data_dir.iterdir())}


async def test_databases_wal_files_and_the_token_file_are_owner_only(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    data_dir = tmp_path / "data"
    app = create_app(Settings(data_dir=data_dir))
    token = (data_dir / TOKEN_FILE).read_text().strip()
    async with admin_client(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        await seed(client, {"mug": (100, 5)}, {"ada": 1_000})
        order = await final_order(client, await place(client, order_body("ada", {"mug": 1})))
        assert order["status"] == "COMPLETED"
        files = modes(data_dir)

    expected = {TOKEN_FILE} | {
        f"{db}.sqlite3{suffix}" for db in DB_NAMES for suffix in ("", "-wal", "-shm")
    }
    assert expected <= set(files), sorted(expected - set(files))
    assert {name: mode for name, mode in files.items() if mode != "0o600"} == {}
    assert oct(stat.S_IMODE(data_dir.stat().st_mode)) == "0o700"


async def test_files_left_readable_by_an_older_version_are_tightened_at_start(
    tmp_path: Path, open_umask: None
) -> None:
    data_dir = tmp_path / "data"
    async with admin_client(create_app(Settings(data_dir=data_dir))):
        pass
    for path in data_dir.iterdir():
        path.chmod(0o644)

    async with admin_client(create_app(Settings(data_dir=data_dir))):
        files = modes(data_dir)

    assert {name: mode for name, mode in files.items() if mode != "0o600"} == {}
