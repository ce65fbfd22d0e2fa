"""Atomic writes: the old file or the new one, never half; temporary files a sweep recognises."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner._files import TEMPORARY, temporary_path, write_atomic
from tuner.study._checkpoints import _TORN_FILE


def test_writes_text_and_bytes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "config.yaml"
    write_atomic(target, "a: 1\n")
    assert target.read_text() == "a: 1\n"
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["config.yaml"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.pt"
    write_atomic(target, b"old")

    def fail(self: Path, other: Path) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_temporary_names_name_their_target_and_the_checkpoint_sweep_knows_them() -> None:
    tmp = temporary_path(Path("/x/slot-12.pt"))
    match = TEMPORARY.fullmatch(tmp.name)
    assert match is not None
    assert match["name"] == "slot-12.pt"
    torn = _TORN_FILE.fullmatch(tmp.name)
    assert torn is not None
    assert torn[1] == "12"
