"""Sliding-window prediction and flip test-time augmentation: tiles cover the image with the overlap
asked for, blending is exact for a per-pixel network and close for a real U-Net, and the CLI threads
--tile and --tta through."""

import numpy as np
import pytest
import torch
from conftest import small_run
from PIL import Image

from pixelwise.cli.main import main
from pixelwise.config import RunConfig
from pixelwise.data.decode import read_image
from pixelwise.data.pairs import IMAGE_DIR
from pixelwise.inference.predictor import Predictor, flip_tta
from pixelwise.evaluation.metrics import class_ids
from pixelwise.inference.tiling import blended_rows, gaussian_window, sliding_window, tile_starts
from pixelwise.inference.upsample import upsampled_ids
from pixelwise.model.unet import preset
from pixelwise.rundir import save_config
from pixelwise.synth import write_dataset


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    # 12 epochs (a few seconds at 48x64): a network that has learnt the scenes' layout, which is what makes
    # tiles with too little context differ from a single pass; a 1-2 epoch one predicts almost uniformly.
    return small_run(scenes, tmp_path_factory.mktemp("tiling") / "run", epochs=12)


@pytest.mark.parametrize("size, tile, overlap", [(100, 32, 0.25), (96, 48, 0.0), (96, 48, 0.5), (37, 16, 0.25),
                                                 (10, 3, 0.9), (1000, 1024, 0.25), (17, 17, 0.5)])
def test_tiles_cover_with_at_least_the_overlap_and_no_more_tiles_than_needed(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(size - tile, 0)
    assert all(tile - (b - a) >= min(overlap * tile, tile - 1) for a, b in zip(starts, starts[1:]))
    if len(starts) > 1:  # one tile fewer could not keep the overlap
        stride = int(tile * (1 - overlap))
        assert (len(starts) - 2) * stride < size - tile


def test_window_peaks_in_the_centre_and_is_never_zero():
    window = gaussian_window(16, 24)
    assert window.shape == (16, 24) and window.min() > 0
    assert window[0, 0] < 1e-6 < window[8, 12] / 2
    assert torch.allclose(window, window.flip(0)) and torch.allclose(window, window.flip(1))


@pytest.mark.parametrize("tile", [(16, 16), (13, 20), (37, 53), (64, 64)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.6])
def test_per_pixel_network_gives_the_single_pass_exactly(tile, overlap):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 1)
    x = torch.rand(2, 3, 37, 53)  # odd sides that no tile divides
    shapes = []

    def forward(t):
        shapes.append(tuple(t.shape))
        return conv(t)

    with torch.no_grad():
        tiled, whole = sliding_window(forward, x, tile, overlap, batch_size=3), conv(x)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    expected = (min(tile[0], 37), min(tile[1], 53))
    assert all(s[2:] == expected and s[0] <= 2 * 3 for s in shapes)  # tiles of the size asked, up to 3 per batch


def whole_image_blend(forward, x, tile, overlap, batch_size):
    """Sliding-window logits as they were made before bands: every tile summed into one (N, classes, H, W)
    tensor with its weights, divided at the end."""
    n, _, height, width = x.shape
    th, tw = min(tile[0], height), min(tile[1], width)
    corners = [(t, l) for t in tile_starts(height, th, overlap) for l in tile_starts(width, tw, overlap)]
    window = gaussian_window(th, tw)
    total = weights = None
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        logits = forward(torch.cat([x[:, :, t : t + th, l : l + tw] for t, l in chunk])).float()
        if total is None:
            total, weights = logits.new_zeros(n, logits.shape[1], height, width), logits.new_zeros(height, width)
        for i, (t, l) in enumerate(chunk):
            total[:, :, t : t + th, l : l + tw] += logits[i * n : (i + 1) * n] * window
            weights[t : t + th, l : l + tw] += window
    return total / weights


@pytest.mark.parametrize("shape, tile, overlap, batch_size", [
    ((2, 3, 37, 53), (16, 16), 0.25, 3), ((1, 3, 101, 77), (32, 20), 0.5, 4), ((1, 3, 64, 64), (16, 16), 0.0, 2),
    ((1, 3, 50, 13), (17, 40), 0.6, 1), ((1, 3, 20, 20), (64, 64), 0.25, 4), ((1, 3, 203, 9), (7, 9), 0.25, 5)])
def test_bands_of_rows_are_the_whole_image_blend_exactly(shape, tile, overlap, batch_size):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 5, 3, padding=1))
    x = torch.rand(*shape)
    with torch.no_grad():
        whole = whole_image_blend(net, x, tile, overlap, batch_size)
        assert torch.equal(sliding_window(net, x, tile, overlap, batch_size), whole)
        next_row = 0
        for start, rows in blended_rows(net, x, tile, overlap, batch_size):
            assert start == next_row and rows.shape[2] <= min(tile[0], shape[2])  # in order, at most a tile high
            assert torch.equal(rows, whole[:, :, start : start + rows.shape[2]])
            next_row = start + rows.shape[2]
    assert next_row == shape[2]


def assert_same_ids_but_ties(ids: np.ndarray, logits: torch.Tensor) -> None:
    """``ids`` are the arg-max of ``logits`` (n_classes, H, W) wherever the two best classes are more than
    float rounding apart."""
    best_two = logits.topk(2, dim=0).values
    clear = (best_two[0] - best_two[1] > 1e-4).numpy()
    assert np.array_equal(ids[clear], class_ids(logits, 0).to(torch.uint8).numpy()[clear])
    assert clear.mean() > 0.99


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("shape, tile", [((203, 157), (64, 48)), ((97, 333), (48, 112)), ((130, 45), (32, 32))])
def test_tiled_prediction_in_bands_gives_the_ids_of_the_whole_image_sliding_window(run, shape, tile, tta):
    """``predict`` never holds a tiled image's logits whole: its ids are those of blending every tile
    into one tensor (the tiles, weights and network of before), at native size and at a size the image is
    resized from."""
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor = Predictor(run, precision="fp32", tile=tile, tta=tta)
    model = predictor.model

    def forward(x):
        return model(x.contiguous(memory_format=torch.channels_last))

    pixels = torch.from_numpy(predictor.padded(image[None])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        whole = whole_image_blend(flip_tta(forward) if tta else forward, pixels, tile, 0.25, 4)[0, :, :shape[0], :shape[1]]
    ids = predictor.predict(image, "native")
    assert_same_ids_but_ties(ids, whole)
    assert np.array_equal(ids, class_ids(predictor.logits(image, "native"), 0).to(torch.uint8).numpy())
    seen = (shape[0] // 16 * 16 + 16, shape[1] // 16 * 16 + 32)  # larger than the tile, not the image's size
    resized = predictor.predict(image, seen)
    assert resized.shape == shape
    logits = predictor.logits(image, seen)
    assert np.array_equal(resized, upsampled_ids(logits, shape, max_bytes=logits.shape[0] * shape[1] * 4))


def test_blending_suppresses_tile_edge_artefacts():
    """A network that is wrong at the rim of its input (as padding makes a U-Net): with overlap, a pixel
    on one tile's rim lies inside another, whose Gaussian weight dominates."""

    def forward(t):
        out = t.clone()
        out[..., :2, :] = out[..., -2:, :] = out[..., :, :2] = out[..., :, -2:] = 100.0
        return out

    x = torch.rand(1, 1, 64, 96)
    tiled = sliding_window(forward, x, (32, 32), overlap=0.5)
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # every tile's rim here is inside another
    assert (tiled - x)[interior].abs().max() < 1  # measured 0.3; a plain average of the tiles is off by up to 50


def test_sliding_window_refuses_a_network_that_shrinks_its_input():
    with pytest.raises(ValueError, match="output is the size of its input"):
        sliding_window(lambda t: t[..., 2:-2, 2:-2], torch.rand(1, 1, 40, 40), (16, 16))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(lambda t: t, torch.rand(1, 1, 40, 40), (16, 16), overlap=1.0)


def test_tiled_unet_agrees_with_the_whole_image(run, tmp_path):
    """A 384x512 scene at native size in 256x256 tiles (2x3, overlapping by 128 px) against one pass.
    Measured here (fp32): argmax agrees on 99.6% of pixels (99.5% away from the border) over 9 predicted
    classes, and mean |Δlogit| is 0.004 of the logits' spatial spread. Tiles must be well above the
    network's receptive field (204 px for 5 levels): on three such scenes 192x256 tiles agree on 98.5%,
    and tiles of the 48x64 training size on 192x256 images on only ~42%, as each looks like a whole scene."""
    scene = write_dataset(tmp_path, 1, seed=11, height=384, width=512, progress=False)
    image = read_image(next((scene / IMAGE_DIR).iterdir()))
    whole = Predictor(run, precision="fp32").logits(image, "native")
    tiled = Predictor(run, precision="fp32", tile=(256, 256)).logits(image, "native")
    assert whole.shape == tiled.shape == (23, 384, 512)
    assert len(whole.argmax(0).unique()) >= 4  # a real prediction, not one class everywhere
    assert (whole - tiled).abs().mean() < 0.02 * whole.std(dim=(1, 2)).mean()
    agree = (whole.argmax(0) == tiled.argmax(0)).float()
    assert agree.mean() > 0.98 and agree[32:-32, 32:-32].mean() > 0.98


def test_large_native_images_are_tiled_automatically(run):
    image = np.random.default_rng(3).integers(0, 255, (1100, 40, 3), dtype=np.uint8)
    auto = Predictor(run, precision="fp32")
    assert auto.tile == (1024, 1024)
    one_pass = Predictor(run, precision="fp32", tile=(2048, 2048)).logits(image, "native")
    tiled = Predictor(run, precision="fp32", tile=(1024, 1024)).logits(image, "native")
    assert torch.equal(auto.logits(image, "native"), tiled)
    assert not torch.equal(tiled, one_pass) and tiled.shape == one_pass.shape == (23, 1100, 40)


def test_flip_tta_is_the_mean_of_both_passes():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)  # not mirror-symmetric: the two passes differ
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        expected = (conv(x) + conv(x.flip(-1)).flip(-1)) / 2
        torch.testing.assert_close(flip_tta(conv)(x), expected)
        assert not torch.allclose(conv(x), expected, atol=1e-3)


def test_predictor_tta_averages_the_image_and_its_mirror(run):
    image = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)  # the training size: no padding
    plain, tta = Predictor(run, precision="fp32"), Predictor(run, precision="fp32", tta=True)
    mirrored = plain.logits(np.ascontiguousarray(image[:, ::-1])).flip(-1)
    torch.testing.assert_close(tta.logits(image), (plain.logits(image) + mirrored) / 2)


def test_tta_with_the_onnx_engine(run, scenes):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelwise.inference.export import export_onnx

    export_onnx(run)
    image = read_image(sorted((scenes / IMAGE_DIR).iterdir())[0])
    onnx = Predictor(run, engine="onnx", tile=(48, 64), tta=True).logits(image, "native")
    torch_ = Predictor(run, precision="fp32", tile=(48, 64), tta=True).logits(image, "native")
    torch.testing.assert_close(onnx, torch_, rtol=1e-3, atol=1e-3)


def test_tile_the_network_cannot_take_is_refused(run, tmp_path):
    with pytest.raises(ValueError, match=r"tile 50x64 does not fit this U-Net.*height 50 → try 48 or 64"):
        Predictor(run, tile=(50, 64))
    save_config(tmp_path, RunConfig(model=preset("original", n_filters=4, n_classes=23)))  # unpadded: output < input
    with pytest.raises(ValueError, match="needs a padded"):
        Predictor(tmp_path, tile=(188, 188))


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_cli_predict_with_tile_and_tta(run, scenes, tmp_path, capsys):
    path = sorted((scenes / IMAGE_DIR).iterdir())[0]
    code, out, _ = run_cli(capsys, "predict", run, path, "--out", tmp_path, "--size", "native", "--tile", "32x64",
                           "--tta", "--no-progress")
    assert code == 0 and "wrote 3 files" in out
    written = np.asarray(Image.open(tmp_path / f"{path.stem}_mask.png"))
    image = read_image(path)
    expected = Predictor(run, tile=(32, 64), tta=True).predict(image, "native")
    assert np.array_equal(written, expected)  # the file holds the tiled, mirrored prediction
    assert not np.array_equal(expected, Predictor(run).predict(image, "native"))  # which differs from the plain one


@pytest.mark.parametrize("tile", ["0x5", "abc", "64"])
def test_cli_malformed_tile_is_a_usage_error(run, tmp_path, capsys, tile):
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(run), str(tmp_path), "--out", str(tmp_path / "out"), "--tile", tile])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"pixelwise predict: error: argument --tile: expected HEIGHTxWIDTH of "
                                            f"positive numbers such as 96x128, got '{tile}'")


def test_cli_tile_the_network_cannot_take_is_one_line(run, scenes, tmp_path, capsys):
    code, _, err = run_cli(capsys, "predict", run, scenes / IMAGE_DIR, "--out", tmp_path / "out", "--tile", "50x64")
    assert code == 1 and err.count("\n") == 1 and "tile 50x64 does not fit this U-Net" in err
    assert not (tmp_path / "out").exists()


def test_cli_evaluate_threads_tile_and_tta(run, scenes, tmp_path, capsys):
    import json

    from pixelwise.data.pairs import MASK_DIR
    from pixelwise.inference.model import load

    code, out, _ = run_cli(capsys, "evaluate", run, scenes, "--out", tmp_path, "--tile", "32x32", "--tta",
                           "--size", "native", "--cache-dir", tmp_path / "cache", "--no-progress")
    assert code == 0 and "mIoU" in out
    expected = load(run, tile=(32, 32), tta=True).evaluate(scenes / IMAGE_DIR, scenes / MASK_DIR, size="native",
                                                           cache_dir=tmp_path / "cache", progress=False)
    plain = load(run).evaluate(scenes / IMAGE_DIR, scenes / MASK_DIR, size="native", cache_dir=tmp_path / "cache",
                               progress=False)
    written = json.loads((tmp_path / "report.json").read_text())["confusion_matrix"]
    assert written == expected.confusion.tolist() != plain.confusion.tolist()
    code, _, err = run_cli(capsys, "evaluate", run, scenes, "--tile", "40x40", "--cache-dir", tmp_path / "cache")
    assert code == 1 and "tile 40x40 does not fit" in err


def test_evaluate_lets_the_model_see_another_size_and_scores_at_the_masks_own(run, scenes, tmp_path, capsys):
    from pixelwise.data.decode import read_mask
    from pixelwise.data.pairs import MASK_DIR
    from pixelwise.evaluation.evaluate import evaluate
    from pixelwise.evaluation.metrics import confusion_matrix

    kw = dict(weights="last", cache_dir=tmp_path / "cache", progress=False)
    native = evaluate(run, scenes / IMAGE_DIR, scenes / MASK_DIR, size="native", **kw)
    predictor = Predictor(run, weights="last")
    expected = sum(confusion_matrix(torch.from_numpy(predictor.predict(read_image(image), "native")),
                                    torch.from_numpy(read_mask(scenes / MASK_DIR / image.name)).long(), 23)
                   for image in sorted((scenes / IMAGE_DIR).iterdir()))
    assert np.array_equal(native.confusion, expected.numpy())
    trained = evaluate(run, scenes / IMAGE_DIR, scenes / MASK_DIR, **kw)  # 48x64, the training size
    assert trained.confusion.sum() == native.confusion.sum() == 32 * 96 * 128  # scored at the masks' size
    assert not np.array_equal(trained.confusion, native.confusion)
    # The torch engine, as the API's evaluate above: the auto engine picks by timing, which a busy machine sways.
    code, out, _ = run_cli(capsys, "evaluate", run, scenes, "--weights", "last", "--size", "native", "--out",
                           tmp_path / "report", "--cache-dir", tmp_path / "cache", "--no-progress", "--engine", "torch")
    assert code == 0 and f"{native.scores.miou:.4f}" in out
