"""The project's temporary names: a killed atomic write's leftovers are found and removed, nothing else."""

import pytest

from pixelwise.files import atomic_path, remove_leftover_temps


class _Killed(Exception):
    pass


def test_leftovers_are_exactly_the_temporary_files_atomic_writes_make(tmp_path):
    long_name = "x" * 200 + ".csv"  # its temporary name keeps only the first 64 bytes
    made = []
    for name in ("history.csv", "best.safetensors", long_name, "noext"):
        with pytest.raises(_Killed), atomic_path(tmp_path / name) as tmp:
            made.append(tmp.name)
            raise _Killed  # atomic_path removes its temporary file; a SIGKILL would not have:
        (tmp_path / made[-1]).write_text("partial")
    users = [".history.csv.tmp.csv", ".history.csv.ABCDEFGH.tmp.csv", "history.csv.abcdefgh.tmp.csv",
             ".history.csv.abcdefgh.tmp.csv.keep", ".other.csv.abcdefgh.tmp.csv", "history.csv"]
    for name in users:
        (tmp_path / name).write_text("mine")
    (tmp_path / ".best.safetensors.abcdefgh.tmp.safetensors").mkdir()  # a folder: not a file we wrote
    removed = remove_leftover_temps(tmp_path, ["history.csv", "best.safetensors", long_name, "noext"])
    assert sorted(p.name for p in removed) == sorted(made)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(users + [".best.safetensors.abcdefgh.tmp.safetensors"])
    assert remove_leftover_temps(tmp_path / "missing", ["history.csv"]) == []
