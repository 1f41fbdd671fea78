"""Prediction over many files: one sorted input list shared out by position, a manifest that makes a
re-run skip what is done, torchrun processes (also as two "nodes" joined through a c10d rendezvous on
127.0.0.1) that each write only their share, and a run killed with SIGKILL that the same command finishes."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import small_run
from pixelwise.data.pairs import IMAGE_DIR
from pixelwise.data.problems import DataError
from pixelwise.inference.inputs import list_inputs
from pixelwise.inference.manifest import COLUMNS, MANIFEST, merge_manifest
from pixelwise.inference.model import load
from pixelwise.inference.shard import process_cores

OUTPUTS = ("_mask.png", "_color.png", "_overlay.png")


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("shard") / "run", epochs=1)


@pytest.fixture(scope="module")
def frames(scenes, tmp_path_factory) -> Path:
    """16 tiny frames (the scenes' images copied under new names)."""
    folder = tmp_path_factory.mktemp("frames")
    images = sorted((scenes / IMAGE_DIR).iterdir())
    for i in range(16):
        (folder / f"f{i:03d}.png").write_bytes(images[i % len(images)].read_bytes())
    return folder


def _manifest(out: Path) -> list[dict]:
    with open(out / MANIFEST, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _cli(*args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert not check or done.returncode == 0, done.stderr[-3000:]
    return done


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != MANIFEST}


def test_inputs_are_sorted_once_repeats_dropped_and_shares_disjoint(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("2.png", "1.png", "10.jpg", ".hidden.png", "notes.txt"):
            (tmp_path / folder / name).write_bytes(b"")
    listed = tmp_path / "lists" / "more.txt"
    listed.parent.mkdir()
    listed.write_text("../a/1.png\n\n../a/2.png\n")
    listing = list_inputs([tmp_path / "a", tmp_path / "a" / "1.png", str(tmp_path / "b" / "1*.png"),
                           tmp_path / "missing", str(tmp_path / "none-*.png")], [listed])
    paths = [listing.path(i) for i in range(len(listing))]
    a, b = tmp_path / "a", tmp_path / "b"
    assert paths == [a / "1.png", b / "1.png", a / "10.jpg", a / "2.png"]  # by output name, each file once
    assert listing.clash(1) == a / "1.png" and listing.clash(0) is None and listing.clash(3) is None
    assert [(p.path.name, p.message) for p in listing.problems] == [
        ("missing", "no such file or folder"), ("none-*.png", "no file matches this pattern")]
    for size in (1, 2, 3):
        shares = [list(listing.share(rank, size)) for rank in range(size)]
        assert sorted(sum(shares, [])) == list(range(len(listing)))
    with pytest.raises(DataError, match="cannot read this list"):
        list_inputs([], [tmp_path / "no-list.txt"])


def test_the_processes_of_a_machine_divide_its_cores_in_blocks():
    cores = [0, 1, 2, 3, 4, 5, 6]
    assert [process_cores(rank, 3, cores) for rank in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [process_cores(rank, 1, cores) for rank in range(1)] == [cores]
    assert [process_cores(rank, 4, [8, 9]) for rank in range(4)] == [[8], [9], [8], [9]]


def test_a_rerun_skips_what_this_model_predicted_and_overwrite_redoes_it(run, frames, tmp_path):
    model, out = load(run, precision="fp32"), tmp_path / "out"
    listed = tmp_path / "frames.txt"
    listed.write_text("".join(f"{os.path.relpath(p, tmp_path)}\n" for p in sorted(frames.iterdir())[:6]))
    first = model.predict([], out=out, lists=[listed])
    rows = _manifest(out)
    assert len(first.written) == 18 and first.skipped == 0 and first.manifest == out / MANIFEST
    assert [r["input"] for r in rows] == [str(p) for p in sorted(frames.iterdir())[:6]]  # normalised paths
    assert list(rows[0]) == list(COLUMNS) and rows[0]["height"] == "96" and rows[0]["width"] == "128"
    shares = [float(s.split(":")[1]) for s in rows[0]["classes"].split(";")]
    assert abs(sum(shares) - 1) < 1e-3 and shares == sorted(shares, reverse=True)

    again = model.predict([frames], out=out)  # the same six skipped, the other 10 predicted
    assert again.skipped == 6 and len(again.written) == 30 and not again.replaced
    (out / "f002_color.png").unlink()  # an output gone: that image is done again
    third = model.predict([frames], out=out)
    assert third.skipped == 15 and len(third.written) == 3 and len(third.replaced) == 2
    assert len(_manifest(out)) == 16 and not list(out.glob("predictions.part-*"))
    forced = model.predict([frames], out=out, overwrite=True)
    assert forced.skipped == 0 and len(forced.written) == 48
    other = model.predict([frames], (32, 48), out=out)  # masks made another way are made again
    assert other.skipped == 0 and len(other.replaced) == 48


def test_predict_without_inputs_is_one_line(run, tmp_path, capsys):
    from pixelwise.cli.main import main

    assert main(["predict", str(run), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == (
        "pixelwise predict: error: nothing to predict: give image files, folders or --list FILE")


def test_merge_keeps_the_newest_row_and_drops_a_line_cut_short(tmp_path):
    header = ",".join(COLUMNS) + "\n"
    (tmp_path / MANIFEST).write_text(header + "a.png,x,1,1,Road:1,0.1,k1\nc.png,x,1,1,Road:1,0.1,k1\n")
    (tmp_path / "predictions.part-01-00000.csv").write_text(header + "a.png,x,1,1,Sky:1,0.2,k2\nb.png,x,1,1,Sky:1,")
    (tmp_path / "predictions.part-02-00001.csv").write_text(header + "b.png,x,2,2,Sky:1,0.3,k2\n")
    assert merge_manifest(tmp_path) == tmp_path / MANIFEST
    assert [(r["input"], r["model"]) for r in _manifest(tmp_path)] == [("a.png", "k2"), ("b.png", "k2"), ("c.png", "k1")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(*command, env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """``torchrun --nnodes 2`` twice, one process each, joined through a c10d rendezvous on 127.0.0.1:
    two machines as a user would launch them, on one."""
    port = _free_port()
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "pw",
                                "-m", *map(str, command)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
              for _ in range(2)]
    done = []
    for agent in agents:
        stdout, stderr = agent.communicate(timeout=300)
        assert agent.returncode == 0, stderr[-3000:]
        done.append(subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr))
    return done


def test_two_nodes_predict_the_same_outputs_as_one_process_each_file_once(run, frames, tmp_path):
    _cli("pixelwise", "predict", run, frames, "--out", tmp_path / "one", "--precision", "fp32", "--no-progress")
    nodes = _two_nodes("pixelwise", "predict", run, frames, "--out", tmp_path / "two", "--precision", "fp32",
                       "--no-progress")
    assert _outputs(tmp_path / "two") == _outputs(tmp_path / "one")
    said = " ".join(node.stdout for node in nodes)
    assert "process 1 of 2: wrote 24 files" in said and "process 2 of 2: wrote 24 files" in said  # 48 = 16 x 3
    assert said.count("one row per image") == 1  # rank 0 alone merges
    one, two = _manifest(tmp_path / "one"), _manifest(tmp_path / "two")
    assert [(r["input"], r["classes"]) for r in two] == [(r["input"], r["classes"]) for r in one]


def test_two_nodes_train_the_weights_of_one_machine_with_two_processes(scenes, tmp_path):
    train = ["pixelwise", "train", scenes, "--recipe", "scratch", "--epochs", "1", "--size", "32x48", "--filters", "4",
             "--batch-size", "4", "--precision", "fp32", "--cache-dir", tmp_path / "cache", "--no-progress"]
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # as torchrun gives the two processes of one machine
    _cli(*train, "--out", tmp_path / "one-machine", "--nproc", "2", env=one_thread)
    _two_nodes(*train, "--out", tmp_path / "two-machines", env=one_thread)
    single = load_file(str(tmp_path / "one-machine" / "last.safetensors"))
    double = load_file(str(tmp_path / "two-machines" / "last.safetensors"))
    weights = [k for k in single if not k.startswith("_")]  # not the optimiser's state
    assert weights and set(weights) <= set(double)
    for key in weights:
        # The same ranks, data, seeds and threads: the same arithmetic (bit-identical here), whichever agent
        # the rendezvous made rank 0.
        a, b = double[key].double(), single[key].double()  # BatchNorm's batch count is an integer
        relative = (a - b).norm() / max(b.norm().item(), 1e-12)
        assert relative.item() < 1e-6, key


def test_processes_of_one_machine_export_once_and_run_the_engine_the_first_chose(run, frames, tmp_path):
    fresh = tmp_path / "run"  # no model.onnx yet: auto exports one on first use
    shutil.copytree(run, fresh, ignore=shutil.ignore_patterns("*.onnx"))
    launch = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "pixelwise", "predict", str(fresh), str(frames), "--out", str(tmp_path / "out"),
                             "--no-progress"], capture_output=True, text=True, timeout=300)
    assert launch.returncode == 0, launch.stderr[-3000:]
    engines = [line for line in launch.stdout.splitlines() if line.startswith("engine:")]
    assert len(engines) == 2, launch.stdout
    assert sum("exported" in line for line in engines) == 1  # the first process exported, the other reused it
    assert len({line.split("(")[0] for line in engines}) == 1  # the same engine (and model) in both


def test_a_killed_sharded_prediction_is_finished_by_the_same_command(run, frames, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "pixelwise", "predict", str(run), str(frames), "--out", str(out), "--precision", "fp32", "--no-progress"]
    launch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while len(list(out.glob("*_mask.png"))) < 6 and launch.poll() is None:  # kill after the 6th image's mask
            time.sleep(0.05)
    finally:
        os.killpg(launch.pid, signal.SIGKILL)  # the launcher and both processes, as a machine that dies
        launch.wait()
    assert launch.returncode == -signal.SIGKILL, "the prediction ended before it could be killed"
    assert not (out / MANIFEST).exists()  # nothing merged yet: the rows are in the processes' parts
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "skipped" in finished.stdout
    stems = sorted(p.stem for p in frames.iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST] + [s + o for s in stems for o in OUTPUTS])
    assert [r["input"] for r in _manifest(out)] == [str(frames / f"{s}.png") for s in stems]
