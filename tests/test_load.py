"""One object per trained model (``pw.load``), prediction in memory bounded by the model and a band
of rows, and ONNX exports that cannot go stale."""

import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_run

import pixelwise as pw
from pixelwise.cli.main import main
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.evaluation.metrics import class_ids
from pixelwise.inference.upsample import upsampled_ids

SRC = Path(pw.__file__).parent.parent


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("load") / "run", epochs=2)


def assert_ids_of_the_whole_image(ids: np.ndarray, logits: torch.Tensor, shape: tuple[int, int]) -> None:
    """``ids`` are what prediction did before bands (all classes upsampled to the full size at once, then
    argmax) wherever the two best classes are more than float rounding apart there."""
    one = logits[None].clone(memory_format=torch.channels_last)
    whole = F.interpolate(one, size=shape, mode="bilinear", align_corners=False)[0]
    best_two = whole.topk(2, dim=0).values
    clear = (best_two[0] - best_two[1] > 1e-4).numpy()
    assert np.array_equal(ids[clear], class_ids(whole, 0).to(torch.uint8).numpy()[clear])
    assert clear.mean() > 0.99  # the near-ties left out (class boundaries) are a sliver, not the test's point


@pytest.mark.parametrize("classes", [2, 10, 23])
@pytest.mark.parametrize("shape", [(1001, 777), (4001, 3), (37, 599), (333, 1111), (31, 47), (97, 1999)])
def test_banded_upsampling_gives_the_ids_of_the_whole_image(shape, classes):
    logits = torch.randn(classes, 48, 64, generator=torch.Generator().manual_seed(sum(shape))) * 3
    # A budget of a few rows, so even these sizes go through many bands.
    banded = upsampled_ids(logits, shape, max_bytes=classes * shape[1] * 4 * 7)
    assert_ids_of_the_whole_image(banded, logits, shape)


def test_banded_upsampling_of_a_trained_model_gives_the_ids_of_the_whole_image(run, scenes):
    model = pw.load(run, precision="fp32")
    image = pw.read_image(sorted((scenes / IMAGE_DIR).iterdir())[0])
    logits = model.logits(image)
    for shape in ((961, 1283), (479, 641)):
        assert_ids_of_the_whole_image(upsampled_ids(logits, shape, max_bytes=4 << 20), logits, shape)
    with pytest.raises(ValueError, match="max_bytes must allow one row"):
        upsampled_ids(logits, (961, 1283), max_bytes=1000)


def test_predicting_a_6000x6000_image_peaks_under_2_gb(run):
    """Peak resident memory of a fresh process that loads the run and predicts one 6000x6000 image: 3.3 GB
    of logits before bands. The peak is the kernel's high-water mark of the process's own memory (VmHWM,
    which sees torch's allocations); not ru_maxrss, which on Linux also carries the peak of the process
    that started it (pytest, over 2 GB late in a full run)."""
    script = textwrap.dedent(f"""
        import numpy as np, pixelwise as pw
        model = pw.load({str(run)!r}, precision="fp32")
        image = np.random.default_rng(0).integers(0, 256, (6000, 6000, 3), dtype=np.uint8)
        mask = model.predict(image)
        assert mask.shape == (6000, 6000), mask.shape
        print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "PIXELWISE_CACHE": str(run.parent)})
    assert done.returncode == 0, done.stderr
    peak_kib = int(done.stdout.split()[-1])
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_predicting_a_4000x4000_image_at_native_size_holds_a_row_of_tiles_not_the_image(tmp_path):
    """A fresh process predicts one 4000x4000 image at its own size in 512x512 tiles with an untrained,
    very narrow network (what matters is the image, and it keeps the test short). Blending every tile
    into one tensor held 23 x 4000 x 4000 float32 logits (1.5 GB), their weights, their quotient and the
    image in float32: the peak rose 3.2 GB above what the process held before predicting. Now only a row of
    tiles' logits is held (23 x 512 x 4000 floats, 188 MB) and the tiles become floats as they go."""
    from pixelwise.config import DataConfig, RunConfig
    from pixelwise.model.build import build_model
    from pixelwise.model.unet import preset
    from pixelwise.rundir import BEST, save_config
    from pixelwise.training import checkpoint

    config = RunConfig(model=preset("assignment", n_filters=2), data=DataConfig(size=(48, 64)))
    save_config(tmp_path, config)
    checkpoint.save(tmp_path / BEST, build_model(config.model))
    script = textwrap.dedent(f"""
        import numpy as np, pixelwise as pw

        def peak():
            return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))

        model = pw.load({str(tmp_path)!r}, precision="fp32", tile=(512, 512))
        image = np.random.default_rng(0).integers(0, 256, (4000, 4000, 3), dtype=np.uint8)
        before = peak()
        mask = model.predict(image, "native")
        assert mask.shape == (4000, 4000), mask.shape
        print(before, peak())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "PIXELWISE_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    before, after = (int(v) for v in done.stdout.split()[-2:])
    assert after - before < 1024 * 1024, f"peak RSS rose {(after - before) / 1024:.0f} MiB while predicting"


def test_load_holds_the_settings_for_predict_and_evaluate(run, scenes, tmp_path):
    model = pw.load(run, tile=(32, 32), tta=True, weights="last", precision="fp32")
    assert (model.weights, model.engine, model.tile, model.tta) == ("last", "torch", (32, 32), True)
    first = sorted((scenes / IMAGE_DIR).iterdir())[0]
    same = pw.Predictor(run, weights="last", precision="fp32", tile=(32, 32), tta=True)
    assert np.array_equal(model.predict(first, "native"), same.predict(pw.read_image(first), "native"))
    result = model.predict(first, "native", out=tmp_path / "out")
    assert not result.problems and np.array_equal(pw.read_mask(tmp_path / "out" / f"{first.stem}_mask.png"),
                                                  model.predict(first, "native"))
    kw = dict(cache_dir=tmp_path / "cache", progress=False, size="native")
    scored = model.evaluate(scenes / IMAGE_DIR, scenes / MASK_DIR, **kw)
    loose = pw.evaluate(run, scenes / IMAGE_DIR, scenes / MASK_DIR, weights="last", precision="fp32", tile=(32, 32),
                        tta=True, **kw)
    assert np.array_equal(scored.confusion, loose.confusion)
    with pytest.raises(ValueError, match="pass out"):
        model.predict(first, masks=scenes / MASK_DIR)


def test_predict_reads_a_path_and_names_a_wrong_type(run, scenes, tmp_path):
    model = pw.load(run, precision="fp32")
    first = sorted((scenes / IMAGE_DIR).iterdir())[0]
    assert np.array_equal(model.predict(str(first)), model.predict(pw.read_image(first)))
    with pytest.raises(TypeError, match="image must be an array or the path of an image file, not int"):
        model.predict(7)
    with pytest.raises(pw.DataError, match="file not found"):
        model.predict(tmp_path / "photo.png")


def test_library_errors_name_parameters(run):
    with pytest.raises(ValueError, match=r"^onnx_model is the onnx engine's; pass engine='onnx'$"):
        pw.load(run, onnx_model="fp32")
    with pytest.raises(ValueError, match=r"^precision is the torch engine's"):
        pw.load(run, engine="onnx", precision="bf16")
    with pytest.raises(FileNotFoundError, match=r"call export\(\) first$"):
        pw.load(run, engine="onnx")


def test_a_stale_onnx_export_is_refused_until_exported_again(run, scenes, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    exported = pw.load(copy, engine="torch").export()
    assert [p.name for p in exported] == ["model.onnx"]
    image = pw.read_image(sorted((scenes / IMAGE_DIR).iterdir())[0])
    fresh = pw.load(copy, engine="onnx").predict(image)
    # best changes, as a resumed training that improves it would change it
    shutil.copyfile(copy / "last.safetensors", copy / "best.safetensors")
    with pytest.raises(pw.StaleExport, match=rf"^{copy / 'model.onnx'} was made from other weights than those now "
                                             rf"in {copy / 'best.safetensors'}; call export\(weights='best'\) again$"):
        pw.load(copy, engine="onnx")
    with pytest.raises(pw.StaleExport):
        pw.evaluate(copy, scenes / IMAGE_DIR, scenes / MASK_DIR, engine="onnx", cache_dir=tmp_path / "cache",
                    progress=False)
    for command in (["predict", str(copy), str(scenes / IMAGE_DIR), "--out", str(tmp_path / "out")],
                    ["evaluate", str(copy), str(scenes)], ["serve", str(copy), "--port", "0"]):
        assert main([*command, "--engine", "onnx", "--no-progress"] if command[0] != "serve"
                    else [*command, "--engine", "onnx"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"run `pixelwise export {copy}` again" in err, err
    assert not (tmp_path / "out").exists()
    # exported from last, then asked for best: another file, refused too
    pw.load(copy, weights="last").export()
    with pytest.raises(pw.StaleExport, match="was made from last.safetensors, not .*best.safetensors"):
        pw.load(copy, engine="onnx")
    onnx = pw.load(copy, engine="onnx", weights="last")
    shutil.copyfile(run / "best.safetensors", copy / "best.safetensors")
    onnx.export()  # the model runs the export it just made: from last
    assert onnx.predict(image).shape == image.shape[:2]
    again = pw.load(copy)
    again.export()
    assert np.array_equal(pw.load(copy, engine="onnx").predict(image), fresh)


def test_an_export_that_records_no_weights_is_refused(run, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    pw.export(copy)
    model = onnx.load(str(copy / "model.onnx"))
    del model.metadata_props[:]  # as an export by an older pixelwise
    onnx.save(model, str(copy / "model.onnx"))
    with pytest.raises(pw.StaleExport, match="records no weights it was made from"):
        pw.load(copy, engine="onnx")


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims any size, with no pixel data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_the_server_cites_its_own_pixel_limit_for_a_bomb():
    from pixelwise.inference.serve import Refused, decode

    with pytest.raises(Refused) as refused:
        decode(header_only_png(100_000, 100_000), "bomb.png", max_pixels=4096 * 4096)
    assert refused.value.status == 400
    assert refused.value.detail.startswith("bomb.png: image has 10,000,000,000 pixels, more than this server's limit")
    assert "raise that limit" not in refused.value.detail and "PIL" not in refused.value.detail
    with pytest.raises(Refused, match="bomb.png: image is 3000 x 2000 pixels, more than this server's limit of 1,000,000"):
        decode(header_only_png(3000, 2000), "bomb.png", max_pixels=1_000_000)
