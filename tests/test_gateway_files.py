"""The gateway's state files are written whole: a failure part-way leaves the old file, or
none, and no stray temporary file; secrets are never overwritten."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud_gateway.files import create_file, replace_file
from cloud_gateway.keys import generate_key, keys_dir, load_identity, write_secret


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _disk_full_after(nbytes: int) -> Callable[..., Any]:
    """An `os.fdopen` whose files take `nbytes` bytes, then fail as a full disk does."""
    real = os.fdopen

    class Filling:
        def __init__(self, fh: Any) -> None:
            self._fh = fh

        def write(self, data: bytes) -> int:
            self._fh.write(data[:nbytes])
            self._fh.flush()
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fh, name)

        def __enter__(self) -> Filling:
            return self

        def __exit__(self, *exc: object) -> None:
            self._fh.close()

    return lambda fd, *args, **kwargs: Filling(real(fd, *args, **kwargs))


def test_replace_file_writes_whole_with_its_mode_and_leaves_nothing_beside(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    replace_file(path, b"one")
    replace_file(path, b"two", mode=0o600)
    assert path.read_bytes() == b"two"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_replace_file_that_fails_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    replace_file(path, b"old")
    monkeypatch.setattr(os, "fdopen", _disk_full_after(2))
    with pytest.raises(OSError, match="No space"):
        replace_file(path, b"new contents")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_create_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    create_file(path, b"first")
    with pytest.raises(FileExistsError):
        create_file(path, b"second")
    assert path.read_bytes() == b"first"
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_a_secret_whose_write_fails_is_not_left_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, the secret's file was created first and then written: a full disk left a
    # truncated key that the next start took for a corrupt identity.
    path = tmp_path / "keys" / "identity.key"
    with monkeypatch.context() as m:
        m.setattr(os, "fdopen", _disk_full_after(5))
        with pytest.raises(OSError, match="No space"):
            write_secret(path, b"a whole secret")
    assert not path.exists()
    assert list(path.parent.iterdir()) == []
    write_secret(path, b"a whole secret")  # the next attempt is not blocked by a stray file
    assert path.read_bytes() == b"a whole secret"


def test_keys_are_written_with_their_modes(tmp_path: Path) -> None:
    load_identity(tmp_path)
    stored = generate_key(tmp_path, valid_days=1)
    folder = keys_dir(tmp_path)
    assert _mode(folder / "identity.key") == 0o600
    assert _mode(folder / f"{stored.key_id}.key") == 0o600
    assert _mode(folder / f"{stored.key_id}.json") == 0o644
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".key", ".key"]
