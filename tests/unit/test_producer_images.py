"""``log_image`` (issue 15, item 7): every step kept as ``<name>/step_<s><ext>``, arrays
encoded as PNG with the standard library's zlib, bad input refused at the call site.

PNGs are decoded with Pillow (matplotlib's dependency), which checks every chunk's CRC."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from producer import Experiment
from producer._images import (
    encode_png,
    image_artifact_name,
    image_file_suffix,
    image_of,
)
from tests.unit.producer_fakes import MemoryKafka, MemoryWorkspace, of_kind, wait_until

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


# ---- PNG encoding ------------------------------------------------------------------------


def test_uint8_gray_rgb_and_rgba_arrays_come_back_pixel_for_pixel() -> None:
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(4, 3, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, size=(2, 9, 4), dtype=np.uint8)
    for array, mode in ((gray, "L"), (rgb, "RGB"), (rgba, "RGBA")):
        image = decoded(encode_png(array))
        assert image.mode == mode
        assert image.size == (array.shape[1], array.shape[0])  # (width, height)
        assert np.array_equal(np.asarray(image), array)


def test_floats_in_0_1_bools_ints_and_single_channel_are_scaled_to_bytes() -> None:
    floats = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert np.asarray(decoded(encode_png(floats))).tolist() == [[0, 128, 255]]
    bools = np.array([[True, False]])
    assert np.asarray(decoded(encode_png(bools))).tolist() == [[255, 0]]
    ints = np.array([[0, 17, 255]], dtype=np.int64)
    assert np.asarray(decoded(encode_png(ints))).tolist() == [[0, 17, 255]]
    one_channel = np.full((2, 2, 1), 9, dtype=np.uint8)
    assert np.asarray(decoded(encode_png(one_channel))).tolist() == [[9, 9], [9, 9]]
    strided = np.arange(24, dtype=np.uint8).reshape(4, 6)[:, ::2]  # not contiguous
    assert np.array_equal(np.asarray(decoded(encode_png(strided))), strided)
    nested = [[0, 255], [255, 0]]  # numpy reads it: any array-like
    assert encode_png(np.asarray(nested)).startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("array", "error", "words"),
    [
        (np.zeros((4, 4, 2), np.uint8), ValueError, r"shape \(4, 4, 2\) is not an image.*HxWx3"),
        (np.zeros(5, np.uint8), ValueError, r"shape \(5,\) is not an image"),
        (np.zeros((2, 2, 2, 3), np.uint8), ValueError, "is not an image"),
        (np.zeros((0, 4), np.uint8), ValueError, "empty"),
        (np.array([[0.0, 1.5]]), ValueError, r"float pixels must be in \[0, 1\], found 0\.\.1\.5"),
        (np.array([[-0.1, 0.5]]), ValueError, r"\[0, 1\]"),
        (np.array([[np.nan, 0.5]]), ValueError, "NaN or infinity"),
        (np.array([[0, 256]]), ValueError, r"integer pixels must be in 0\.\.255, found 0\.\.256"),
        (np.array([[-1, 3]], np.int8), ValueError, r"0\.\.255"),
        (np.array([["a", "b"]]), TypeError, "not an image"),
        (np.array([[1 + 1j]]), TypeError, "not an image"),
        (np.zeros((1, 20_000), np.uint8), ValueError, "16384-pixel limit"),
    ],
)
def test_arrays_that_are_not_images_are_refused_saying_why(
    array: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        encode_png(array)


# ---- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "step", "suffix", "stored", "image"),
    [
        ("loss_curve", 0, ".png", "loss_curve/step_0.png", "loss_curve"),
        ("loss_curve.png", 3, ".png", "loss_curve/step_3.png", "loss_curve"),
        ("LOSS.PNG", 3, ".png", "LOSS/step_3.png", "LOSS"),
        ("plots/val 1", -2, ".jpg", "plots/val 1/step_-2.jpg", "plots/val 1"),
        ("photo.png", 1, ".jpeg", "photo.png/step_1.jpeg", "photo.png"),
        ("sample_5", 2**62, ".svg", f"sample_5/step_{2**62}.svg", "sample_5"),
    ],
)
def test_each_step_has_its_own_file_named_with_its_extension(
    name: str, step: int, suffix: str, stored: str, image: str
) -> None:
    assert image_artifact_name(name, step, suffix) == stored
    assert image_of(stored) == (image, step)


def test_images_stored_before_steps_were_kept_have_no_step() -> None:
    for old in ("ROC", "mse vs alpha", "a/b", "x/step_1", "x/step_y.png"):
        assert image_of(old) == (old, None)


def test_image_files_keep_their_extension_unless_it_names_another_format(
    tmp_path: Path,
) -> None:
    png, jpeg, gif = PNG_MAGIC + b"rest", b"\xff\xd8\xff\xe0rest", b"GIF89a rest"
    cases = {"a.png": (png, ".png"), "b.JPEG": (jpeg, ".jpeg"), "c.jpg": (jpeg, ".jpg"),
             "mislabelled.jpg": (png, ".png"), "noext": (gif, ".gif"),
             "d.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'/>", ".svg"),
             "e.webp": (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ".webp")}
    for file, (data, suffix) in cases.items():
        (tmp_path / file).write_bytes(data)
        assert image_file_suffix(tmp_path / file) == suffix, file
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"is not a PNG, JPEG.*use run.upload_file"):
        image_file_suffix(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="no such file"):
        image_file_suffix(tmp_path / "missing.png")


# ---- run.log_image -------------------------------------------------------------------------


def images_of(kafka: MemoryKafka, count: int) -> dict[str, dict[str, Any]]:
    wait_until(lambda: len(of_kind(kafka.events(), "Artifact")) >= count)
    return {a["name"]: a for a in of_kind(kafka.events(), "Artifact")}


def test_every_step_of_an_image_is_kept(
    ws: MemoryWorkspace, kafka: MemoryKafka, tmp_path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    photo = tmp_path / "photo.jpeg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    for level in (0, 100, 200):  # no step: 0, 1, 2 - a newer image replaces none
        run.log_image("digits", np.full((3, 4), level, dtype=np.uint8))
    run.log_image("digits", plot=np.zeros((3, 4, 3)), step=10)
    run.log_image("digits", np.ones((2, 2)))  # one past the last step: 11
    run.log_image("loss_curve.png", plot=figure, step=np.int64(5))  # type: ignore[arg-type]
    run.log_image("photo", path=photo, step=-1)
    run.log_image("photo", path=str(photo))  # 0
    run.complete()

    artifacts = images_of(kafka, 8)
    assert sorted(artifacts) == [
        "digits/step_0.png", "digits/step_1.png", "digits/step_10.png", "digits/step_11.png",
        "digits/step_2.png", "loss_curve/step_5.png", "photo/step_-1.jpeg",
        "photo/step_0.jpeg",
    ]
    assert {a["kind"] for a in artifacts.values()} == {"IMAGE"}
    assert artifacts["photo/step_0.jpeg"]["content_type"] == "image/jpeg"
    assert artifacts["loss_curve/step_5.png"]["content_type"] == "image/png"
    levels = []
    for step in range(3):
        data = (ws.blob_dir / artifacts[f"digits/step_{step}.png"]["sha256"]).read_bytes()
        levels.append(int(np.asarray(decoded(data)).max()))
    assert levels == [0, 100, 200]
    curve = (ws.blob_dir / artifacts["loss_curve/step_5.png"]["sha256"]).read_bytes()
    assert curve.startswith(PNG_MAGIC)


def test_bad_images_raise_at_the_call_and_log_nothing(
    ws: MemoryWorkspace, kafka: MemoryKafka, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("text")
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    bad: list[tuple[type[Exception], str, Any]] = [
        (ValueError, "exactly one of path=", lambda: run.log_image("img")),
        (ValueError, "exactly one of path=",
         lambda: run.log_image("img", np.zeros((2, 2)), plot=np.zeros((2, 2)))),
        (TypeError, "plot must be matplotlib.pyplot, a matplotlib Figure or an image array",
         lambda: run.log_image("img", plot=object())),  # type: ignore[arg-type]
        (TypeError, "path must be an image file's path or an image array",
         lambda: run.log_image("img", path=3)),  # type: ignore[arg-type]
        (ValueError, "no such file", lambda: run.log_image("img", tmp_path / "missing.png")),
        (ValueError, "is not a PNG", lambda: run.log_image("img", tmp_path / "notes.txt")),
        (ValueError, r"shape \(2, 2, 5\) is not an image",
         lambda: run.log_image("img", np.zeros((2, 2, 5)))),
        (ValueError, r"\[0, 1\]", lambda: run.log_image("img", np.full((2, 2), 2.0))),
        (TypeError, "step must be an int",
         lambda: run.log_image("img", np.zeros((1, 1)), step=1.5)),  # type: ignore[arg-type]
        (ValueError, "must not contain '..'", lambda: run.log_image("a/../b", np.zeros((1, 1)))),
        (ValueError, "image name must not be empty", lambda: run.log_image("", np.zeros((1, 1)))),
    ]
    for error, words, call in bad:
        with pytest.raises(error, match=words):
            call()
    run.log_image("img", np.zeros((1, 1)))  # the first good call is step 0
    run.complete()
    assert sorted(images_of(kafka, 1)) == ["img/step_0.png"]


def test_numpy_is_imported_only_for_an_array(
    ws: MemoryWorkspace, kafka: MemoryKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(PNG_MAGIC + b"rest")
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now raises ImportError
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    run.log_image("file", png)

    class Tensor:
        def __array__(self) -> Any:
            raise AssertionError("not reached")

    with pytest.raises(TypeError, match=r"encoded with numpy, which is not installed"):
        run.log_image("tensor", Tensor())
    run.complete()
    assert sorted(images_of(kafka, 1)) == ["file/step_0.png"]
