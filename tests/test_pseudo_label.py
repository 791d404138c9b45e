"""`ltpll pseudo-label`: which images get pseudo-labels (threshold, cap), the file that carries
them (exact round trip, refusals), the pools (a folder of any images, the run's left-over
training images) and the command end to end, with one-line errors."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ltpll.cli.main import main
from ltpll.errors import LTPLLError
from ltpll.representation.pseudo_label import (
    leftover_pool,
    load_pseudo_labels,
    load_unlabeled_folder,
    pseudo_label,
    save_pseudo_labels,
)
from tests.helpers import FOLDER_CLASSES as CLASSES
from tests.helpers import PER_CLASS, tiny_model, tiny_pll_arrays

SHAPE = (16, 16, 3)
SCALE = 10.0


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_user_error(result, needle):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert needle in lines[0], result.output


def assert_one_line_error(call, needle):
    with pytest.raises(LTPLLError) as caught:
        call()
    assert needle in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


# --------------------------------------------------------------------------------------------
# Which images are kept
# --------------------------------------------------------------------------------------------


def colour_model():
    """Logits = SCALE * mean colour in [0, 1]: a solid image of value v in channel c only gets
    label c with probability e^(SCALE v/255) / (e^(SCALE v/255) + 2)."""
    model = keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Rescaling(1.0 / 255.0),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    model.layers[-1].set_weights([SCALE * np.eye(3, dtype="float32"), np.zeros(3, "float32")])
    return model


# (channel, value) of each solid image; distinct values, so confidences differ.
COLOURS = [(0, 255), (1, 60), (2, 230), (1, 200), (0, 0), (2, 120), (1, 250)]


def solid_images():
    images = np.zeros((len(COLOURS), *SHAPE), dtype=np.uint8)
    for i, (channel, value) in enumerate(COLOURS):
        images[i, ..., channel] = value
    top = np.array([np.exp(SCALE * v / 255) / (np.exp(SCALE * v / 255) + 2) for _, v in COLOURS])
    return images, np.array([c for c, _ in COLOURS]), top


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9, 0.99, 0.9999, 1.0])
def test_threshold_keeps_exactly_the_confident_images(threshold):
    images, channels, top = solid_images()
    kept = pseudo_label(colour_model(), images, threshold, max_count=100)
    expected = np.flatnonzero(top >= threshold)
    assert kept.indices.tolist() == expected.tolist()
    # The all-black image ties every class at 1/3; argmax takes class 0, as its channel says.
    assert kept.labels.tolist() == channels[expected].tolist()
    np.testing.assert_allclose(kept.confidences, top[expected], rtol=1e-5)


def test_a_confidence_equal_to_the_threshold_is_kept():
    images, _, _ = solid_images()
    everything = pseudo_label(colour_model(), images, 0.0, max_count=100)
    middle = int(np.argsort(everything.confidences)[3])
    kept = pseudo_label(colour_model(), images, float(everything.confidences[middle]), 100)
    assert middle in kept.indices.tolist() and len(kept.indices) == 4


def test_cap_keeps_the_most_confident_in_pool_order():
    images, _, top = solid_images()
    for cap in (0, 1, 3, len(images)):
        kept = pseudo_label(colour_model(), images, 0.0, max_count=cap, batch_size=2)
        expected = np.sort(np.argsort(-top)[:cap])  # values 255, 250, 230 first
        assert kept.indices.tolist() == expected.tolist()
    # The cap applies after the threshold: 0.99 keeps 4 images (v >= 200), the cap 2 of those.
    assert pseudo_label(colour_model(), images, 0.99, max_count=2).indices.tolist() == [0, 6]


def test_labels_of_a_pll_model_are_its_debiased_predictions():
    from ltpll.metrics import predict_logits

    images, candidates, _ = tiny_pll_arrays(n=12)
    model = tiny_model(images, candidates)
    logits = predict_logits(model, images)
    kept = pseudo_label(model, images, 0.0, max_count=12, batch_size=5)
    assert kept.indices.tolist() == list(range(12))
    assert kept.labels.tolist() == logits.argmax(-1).tolist()
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(kept.confidences, (exp / exp.sum(-1, keepdims=True)).max(-1),
                               rtol=1e-6)


@pytest.mark.parametrize("threshold, max_count, needle", [
    (-0.01, 1, "threshold"), (1.01, 1, "threshold"), (float("nan"), 1, "threshold"),
    ("0.5", 1, "threshold"), (0.5, -1, "max_count"), (0.5, 1.5, "max_count"),
])
def test_bad_threshold_or_cap_is_refused(threshold, max_count, needle):
    images, _, _ = solid_images()
    assert_one_line_error(lambda: pseudo_label(colour_model(), images, threshold, max_count),
                          needle)


# --------------------------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------------------------


def some_pseudo_labels(n=5, seed=3):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), n)
    confidences = rng.random(n)
    paths = [f"dir {i}/bild-ä{i}.png" for i in range(n)]
    return images, labels, confidences, paths


def test_round_trip_is_exact_and_metadata_counts(tmp_path):
    images, labels, confidences, paths = some_pseudo_labels()
    true_labels = labels.copy()
    true_labels[0] = (labels[0] + 1) % len(CLASSES)  # one pseudo-label wrong
    path = str(tmp_path / "sub" / "pl.npz")
    save_pseudo_labels(path, images, labels, confidences, paths, CLASSES, "runs/x",
                       threshold=0.9, true_labels=true_labels, extra={"pool_size": 17})
    assert os.listdir(tmp_path / "sub") == ["pl.npz"]  # no temporary file left behind
    loaded_images, loaded_labels, loaded_paths = load_pseudo_labels(path, CLASSES, SHAPE)
    assert loaded_images.dtype == np.uint8 and np.array_equal(loaded_images, images)
    assert loaded_labels.dtype == np.int64 and loaded_labels.tolist() == labels.tolist()
    assert loaded_paths == paths
    with np.load(path, allow_pickle=False) as stored:
        metadata = json.loads(str(stored["metadata"]))
        np.testing.assert_allclose(stored["confidences"], confidences, rtol=1e-6)
    assert metadata["source"] == "runs/x" and metadata["threshold"] == 0.9
    assert metadata["counts"] == {name: int((labels == c).sum()) for c, name in enumerate(CLASSES)}
    assert metadata["accuracy"] == pytest.approx(4 / 5)
    assert metadata["pool_size"] == 17 and metadata["num_images"] == 5


def test_an_empty_file_round_trips(tmp_path):
    path = str(tmp_path / "empty.npz")
    save_pseudo_labels(path, np.zeros((0, *SHAPE), np.uint8), [], [], [], CLASSES, "run")
    images, labels, paths = load_pseudo_labels(path, CLASSES, SHAPE)
    assert images.shape == (0, *SHAPE) and labels.shape == (0,) and paths == []


def test_load_rejects_another_runs_classes_or_image_size(tmp_path):
    path = str(tmp_path / "pl.npz")
    images, labels, confidences, paths = some_pseudo_labels()
    save_pseudo_labels(path, images, labels, confidences, paths, CLASSES, "run")
    assert_one_line_error(lambda: load_pseudo_labels(path, CLASSES[::-1], SHAPE), "classes")
    assert_one_line_error(lambda: load_pseudo_labels(path, CLASSES[:2], SHAPE), "classes")
    assert_one_line_error(lambda: load_pseudo_labels(path, CLASSES, (32, 32, 3)), "shape")


def test_save_refuses_other_suffixes_existing_files_and_bad_labels(tmp_path):
    images, labels, confidences, paths = some_pseudo_labels()
    for name in ("pl.npy", "pl", "pl.npz.tmp"):
        assert_one_line_error(lambda name=name: save_pseudo_labels(
            str(tmp_path / name), images, labels, confidences, paths, CLASSES, "run"), ".npz")
    existing = tmp_path / "old.npz"
    existing.write_bytes(b"keep me")
    assert_one_line_error(lambda: save_pseudo_labels(
        str(existing), images, labels, confidences, paths, CLASSES, "run"), "exists")
    assert existing.read_bytes() == b"keep me"
    assert_one_line_error(lambda: save_pseudo_labels(
        str(tmp_path / "bad.npz"), images, labels + 3, confidences, paths, CLASSES, "run"),
        "0..2")
    assert sorted(os.listdir(tmp_path)) == ["old.npz"]


def test_a_crash_while_writing_leaves_no_file(tmp_path, monkeypatch):
    def crash(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", crash)
    images, labels, confidences, paths = some_pseudo_labels()
    with pytest.raises(KeyboardInterrupt):
        save_pseudo_labels(str(tmp_path / "pl.npz"), images, labels, confidences, paths,
                           CLASSES, "run")
    assert os.listdir(tmp_path) == []


def test_load_rejects_missing_unreadable_and_foreign_files(tmp_path):
    assert_one_line_error(lambda: load_pseudo_labels(str(tmp_path / "no.npz"), CLASSES, SHAPE),
                          "does not exist")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all\n" * 10)
    assert_one_line_error(lambda: load_pseudo_labels(str(garbage), CLASSES, SHAPE),
                          "cannot read")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, images=np.zeros((1, *SHAPE), np.uint8))
    assert_one_line_error(lambda: load_pseudo_labels(str(foreign), CLASSES, SHAPE),
                          "not an ltpll pseudo-label file")
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    assert_one_line_error(lambda: load_pseudo_labels(str(plain), CLASSES, SHAPE),
                          "not an ltpll pseudo-label file")
    truncated = tmp_path / "truncated.npz"
    images, labels, confidences, paths = some_pseudo_labels()
    save_pseudo_labels(str(tmp_path / "whole.npz"), images, labels, confidences, paths,
                       CLASSES, "run")
    truncated.write_bytes((tmp_path / "whole.npz").read_bytes()[:300])
    assert_one_line_error(lambda: load_pseudo_labels(str(truncated), CLASSES, SHAPE),
                          "cannot read")


# --------------------------------------------------------------------------------------------
# Pools
# --------------------------------------------------------------------------------------------


@pytest.fixture
def unlabeled_folder(tmp_path):
    """Images at any depth and of other sizes and modes, plus files that must be left out."""
    root = tmp_path / "pool"
    rng = np.random.default_rng(7)
    images = {
        "b/deep/y2.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "a/x1.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "top.png": rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),        # resized
        "a/grey.PNG": rng.integers(0, 256, (16, 16), dtype=np.uint8),        # L mode
        "0first.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "c/n.png": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),           # enlarged
    }
    for relative, pixels in images.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / relative, format="PNG")
    (root / "broken.png").write_bytes(b"\x89PNG but truncated")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"ignored")
    order = ["0first.png", "a/grey.PNG", "a/x1.png", "b/deep/y2.png", "c/n.png", "top.png"]
    return str(root), order, ["broken.png"]


def decoded(folder, relative):
    with Image.open(os.path.join(folder, relative)) as image:
        image = image.convert("RGB")
        if image.size != SHAPE[:2]:
            image = image.resize(SHAPE[:2], Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def test_folder_pool_decodes_resizes_and_skips(unlabeled_folder):
    folder, order, broken = unlabeled_folder
    pool = load_unlabeled_folder(folder, SHAPE, workers=2)
    assert pool.paths == order and pool.skipped == broken
    assert pool.images.shape == (len(order), *SHAPE) and pool.images.dtype == np.uint8
    for image, relative in zip(pool.images, pool.paths):
        assert np.array_equal(image, decoded(folder, relative)), relative


def test_folder_pool_errors(tmp_path):
    assert_one_line_error(lambda: load_unlabeled_folder(str(tmp_path / "none"), SHAPE),
                          "does not exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    assert_one_line_error(lambda: load_unlabeled_folder(str(tmp_path / "empty"), SHAPE),
                          "no images")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"no jpeg")
    assert_one_line_error(lambda: load_unlabeled_folder(str(tmp_path / "bad"), SHAPE),
                          "none of the 1 images")


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(image_folder, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("pseudo-run") / "run")
    result = invoke("train", "--dataset", image_folder, "--imbalance-ratio", "2",
                    "--backbone", "tiny", "--epochs", "1", "--batch-size", "8", "--seed", "5",
                    "--no-jit", "--output", run)
    assert result.exit_code == 0, result.output
    return run


def test_command_labels_a_folder(run_dir, unlabeled_folder, tmp_path):
    from ltpll.metrics import predict_logits
    from ltpll.saving import load_run

    folder, order, _ = unlabeled_folder
    out = str(tmp_path / "pl.npz")
    result = invoke("pseudo-label", run_dir, "--unlabeled", folder, "--threshold", "0",
                    "--output", out)
    assert result.exit_code == 0, result.output
    assert "pool: 6 images" in result.output and "skipped 1 unreadable" in result.output
    assert "kept: 6 pseudo-labels" in result.output
    images, labels, paths = load_pseudo_labels(out, CLASSES, SHAPE)
    assert paths == order
    for image, relative in zip(images, paths):
        assert np.array_equal(image, decoded(folder, relative)), relative
    _, _, model = load_run(run_dir)
    assert labels.tolist() == predict_logits(model, images).argmax(-1).tolist()


def test_command_caps_by_the_unlabeled_ratio(run_dir, unlabeled_folder, tmp_path):
    folder, _, _ = unlabeled_folder
    out = str(tmp_path / "pl.npz")
    # 44 labelled images (20 + 14 + 10): a ratio of 0.05 allows int(2.2) = 2 pseudo-labels.
    result = invoke("pseudo-label", run_dir, "--unlabeled", folder, "--threshold", "0",
                    "--unlabeled-ratio", "0.05", "--output", out)
    assert result.exit_code == 0, result.output
    assert "kept: 2 pseudo-labels" in result.output
    assert len(load_pseudo_labels(out, CLASSES, SHAPE)[0]) == 2


def test_command_labels_the_left_over_training_images(run_dir, image_folder, tmp_path):
    out = str(tmp_path / "pl.npz")
    result = invoke("pseudo-label", run_dir, "--threshold", "0", "--output", out)
    assert result.exit_code == 0, result.output
    with open(os.path.join(run_dir, "candidates.csv")) as handle:
        trained = {row["path"] for row in csv.DictReader(handle)}
    images, labels, paths = load_pseudo_labels(out, CLASSES, SHAPE)
    # rho = 2 keeps 20, 14 and 10 of each class's 20 images: 0 + 6 + 10 are left over.
    assert len(paths) == 16 and not trained & set(paths)
    assert trained | set(paths) == {f"{name}/{i:03d}.png" for name in CLASSES
                                    for i in range(PER_CLASS["train"])}
    for image, relative in zip(images, paths):
        assert np.array_equal(image, decoded(os.path.join(image_folder, "train"), relative))
    true_labels = np.array([CLASSES.index(p.split("/")[0]) for p in paths])
    accuracy = float((labels == true_labels).mean())
    with np.load(out, allow_pickle=False) as stored:
        assert json.loads(str(stored["metadata"]))["accuracy"] == pytest.approx(accuracy)
    assert f"pseudo-label accuracy: {100 * accuracy:.1f}%" in result.output
    assert "in pool" in result.output  # the per-class table shows the pool's true counts


def test_leftover_pool_is_the_unused_part_of_the_split(run_dir):
    from ltpll.saving import load_run

    config, counts, _ = load_run(run_dir)
    images, labels, paths = leftover_pool(config)
    assert np.bincount(labels, minlength=3).tolist() == [
        PER_CLASS["train"] - n for n in counts["counts"]]
    assert [CLASSES[c] for c in labels] == [p.split("/")[0] for p in paths]
    assert images.shape == (len(paths), *SHAPE)


def test_command_user_errors(run_dir, unlabeled_folder, tmp_path):
    folder, _, _ = unlabeled_folder
    existing = tmp_path / "old.npz"
    existing.write_bytes(b"keep")
    assert_user_error(invoke("pseudo-label", run_dir, "--unlabeled", folder,
                             "--output", str(existing)), "exists")
    assert existing.read_bytes() == b"keep"
    assert_user_error(invoke("pseudo-label", str(tmp_path / "no-run"), "--output",
                             str(tmp_path / "x.npz")), "does not exist")
    assert_user_error(invoke("pseudo-label", run_dir, "--output", str(tmp_path / "x.csv")),
                      ".npz")
    assert_user_error(invoke("pseudo-label", run_dir, "--threshold", "1.5", "--output",
                             str(tmp_path / "x.npz")), "--threshold")
    assert_user_error(invoke("pseudo-label", run_dir, "--unlabeled", str(tmp_path / "none"),
                             "--output", str(tmp_path / "x.npz")), "does not exist")
    assert sorted(os.listdir(tmp_path)) == ["old.npz", "pool"]  # nothing written
