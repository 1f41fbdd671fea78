"""The Python API is what the README shows: top-level names only, and its example runs as written."""

import re
from pathlib import Path

import pytest

import pixelwise as pw

README = Path(__file__).parent.parent / "README.md"


def test_the_api_a_user_needs_is_top_level():
    for name in ("train", "evaluate", "predict", "Predictor", "load", "export", "check", "RunConfig", "recipe", "UNet"):
        assert callable(getattr(pw, name)), name
    assert set(pw.__all__) <= set(dir(pw))


def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    block = re.search(r"<!-- api-example -->\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    assert re.findall(r"^(?:from|import) .*", block, re.M) == ["import pixelwise as pw"]
    assert "pw.load(" in block and "model.predict(" in block and "model.evaluate(" in block
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert "mIoU" in capsys.readouterr().out
    assert (tmp_path / "runs/demo/model.int8.onnx").is_file() and (tmp_path / "predictions").is_dir()
    assert pw.load_config("runs/demo").train.epochs == 3  # resumed for a third epoch
    assert len((tmp_path / "runs/demo/history.csv").read_text().splitlines()) == 1 + 3


def test_resume_through_the_api_refuses_changed_settings(tmp_path):
    data = pw.write_dataset(tmp_path / "data", 8, seed=1, height=48, width=64, progress=False)
    config = pw.RunConfig(model=pw.preset("assignment", n_filters=4), data=pw.DataConfig(size=(48, 64)),
                          train=pw.TrainConfig(epochs=1, batch_size=4))
    kw = {"cache_dir": tmp_path / "cache", "progress": False, "log": lambda _: None}
    pw.train(data / "CameraRGB", data / "CameraMask", tmp_path / "run", config, **kw)
    changed = config.with_train(epochs=2, lr=0.1)
    with pytest.raises(pw.RunDirError, match=r"train\.lr cannot change when resuming"):
        pw.train(data / "CameraRGB", data / "CameraMask", tmp_path / "run", changed, resume=True, **kw)
    result = pw.train(data / "CameraRGB", data / "CameraMask", tmp_path / "run", config.with_train(epochs=2),
                      resume=True, **kw)
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_check_lists_problems_and_counts_classes(tmp_path):
    data = pw.write_dataset(tmp_path / "data", 4, seed=2, height=48, width=64, progress=False)
    (data / "CameraMask" / sorted((data / "CameraMask").iterdir())[0].name).write_bytes(b"not a png")
    report = pw.check(data / "CameraRGB", data / "CameraMask", cache_dir=tmp_path / "cache", progress=False)
    assert len(report.names) == 3 and len(report.problems) == 1 and report.histogram.sum() == 3 * 48 * 64
