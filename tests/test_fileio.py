"""Directories that appear whole or not at all (checkpoints, exports, pre-trained backbones)."""

import os

import pytest

from ltpll.fileio import DirectoryNotMoved, atomic_directory


def _siblings(path):
    return sorted(os.listdir(os.path.dirname(path)))


def test_the_directory_appears_only_when_the_block_succeeds(tmp_path):
    target = str(tmp_path / "out")
    with atomic_directory(target) as tmp:
        open(os.path.join(tmp, "a.txt"), "w").write("done")
        assert not os.path.exists(target)
    assert open(os.path.join(target, "a.txt")).read() == "done"
    assert _siblings(target) == ["out"]
    assert oct(os.stat(target).st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_an_error_in_the_block_leaves_nothing(tmp_path):
    target = str(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            open(os.path.join(tmp, "half.txt"), "w").write("half")
            raise RuntimeError("crash")
    assert _siblings(target) == []


def test_replace_swaps_an_existing_directory(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(str(target), replace=True) as tmp:
        open(os.path.join(tmp, "new.txt"), "w").write("new")
    assert os.listdir(target) == ["new.txt"]


def test_a_non_empty_target_is_not_overwritten_and_can_keep_the_result(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "theirs.txt").write_text("theirs")
    with pytest.raises(DirectoryNotMoved) as deleted:
        with atomic_directory(str(target)) as tmp:
            open(os.path.join(tmp, "mine.txt"), "w").write("mine")
    assert deleted.value.kept is None and _siblings(str(target)) == ["out"]
    with pytest.raises(DirectoryNotMoved) as kept:
        with atomic_directory(str(target), keep_on_failure=True) as tmp:
            open(os.path.join(tmp, "mine.txt"), "w").write("mine")
    assert open(os.path.join(kept.value.kept, "mine.txt")).read() == "mine"
    assert os.listdir(target) == ["theirs.txt"]
