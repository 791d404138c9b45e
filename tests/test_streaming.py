"""Large-dataset input: list files (ImageNet-LT / Places-LT text, iNaturalist JSON), images of
mixed sizes and modes, streaming from disk vs in memory, and the invariant that matters most: a
sample's image, candidate row and index stay together through shuffling, decoding and resume."""

import json
import os

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ltpll.cli.main import main
from ltpll.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ltpll.data import pipeline
from ltpll.data.files import ImageFiles, choose_input, decode_file
from ltpll.data.prepare import channel_statistics, prepare_data
from ltpll.data.sources import load_split
from ltpll.errors import LTPLLError
from ltpll.training import resume, train

MODES = ("RGB", "L", "RGBA", "CMYK", "P", "LA")


def _save(image_array, mode, path):
    image = Image.fromarray(image_array).convert(mode)
    image.save(path, quality=95) if path.endswith(".jpg") else image.save(path)


def _extension(mode):
    return "jpg" if mode in ("RGB", "L", "CMYK") else "png"


@pytest.fixture(scope="module")
def list_dataset(tmp_path_factory):
    """An ImageNet-LT-style root: ``train/<wnid>/*.{jpg,png}`` of mixed sizes and modes, with
    ``train.txt`` / ``test.txt`` lists and an iNaturalist-style ``train2018.json``/``val2018.json``.

    Class ``c`` images are dominated by one colour channel, so a classifier can learn them.
    """
    root = tmp_path_factory.mktemp("imagenet_lt")
    rng = np.random.default_rng(0)
    counts = {"train": [40, 24, 14, 8], "test": [8, 8, 8, 8]}
    lists, coco = {}, {}
    for split, per_class in counts.items():
        lines, images, annotations = [], [], []
        for label, count in enumerate(per_class):
            folder = root / split / f"n0{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                height, width = (int(v) for v in rng.integers(24, 72, 2))
                pixels = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
                pixels[..., label % 3] += 180
                if label == 3:
                    pixels[..., 0] += 60
                mode = MODES[(i + label) % len(MODES)]
                relative = f"{split}/n0{label}/{i:03d}.{_extension(mode)}"
                _save(pixels, mode, str(root / relative))
                lines.append(f"{relative} {label}")
                images.append({"id": len(images), "file_name": relative})
                annotations.append({"image_id": images[-1]["id"], "category_id": 10 + label})
        lists[split] = root / f"{split}.txt"
        lists[split].write_text("\n".join(lines) + "\n")
        coco[split] = {"images": images, "annotations": annotations,
                       "categories": [{"id": 10 + c, "name": f"species_{c}"} for c in range(4)]}
    (root / "train2018.json").write_text(json.dumps(coco["train"]))
    (root / "val2018.json").write_text(json.dumps(coco["test"]))
    return root


def _data_config(root, **overrides):
    fields = dict(dataset=str(root), train_split="train.txt", test_split="test.txt",
                  image_size=32, partial_rate=0.3)
    return DataConfig(**{**fields, **overrides})


# --- list files ------------------------------------------------------------------------------


def test_text_list_names_classes_after_their_folders_and_keeps_the_list_order(list_dataset):
    split = load_split(str(list_dataset), "train.txt", 32, input_mode="stream")
    assert split.class_names == ["n00", "n01", "n02", "n03"]
    lines = (list_dataset / "train.txt").read_text().split("\n")[:-1]
    assert split.paths == [line.split()[0] for line in lines]
    assert split.labels.tolist() == [int(line.split()[1]) for line in lines]
    assert isinstance(split.images, ImageFiles) and split.images.shape == (86, 32, 32, 3)


def test_a_third_column_names_the_class_and_bad_lines_are_named(tmp_path, list_dataset):
    lines = (list_dataset / "train.txt").read_text().splitlines()
    named = tmp_path / "named.txt"
    named.write_text("\n".join(f"{line} class {line.split()[1]}" for line in lines))
    split = load_split(str(list_dataset), str(named), 32, input_mode="stream")
    assert split.class_names == ["class 0", "class 1", "class 2", "class 3"]
    broken = tmp_path / "broken.txt"
    broken.write_text(lines[0] + "\ntrain/n00/000.jpg not-a-label\n")
    with pytest.raises(LTPLLError, match=r"broken.txt:2: expected"):
        load_split(str(list_dataset), str(broken), 32)


def test_test_list_with_a_class_the_training_list_lacks_is_refused(tmp_path, list_dataset):
    extra = tmp_path / "extra.txt"
    extra.write_text((list_dataset / "test.txt").read_text() + "test/n00/000.jpg 7\n")
    train = load_split(str(list_dataset), "train.txt", 32, input_mode="stream")
    with pytest.raises(LTPLLError, match="label id.*7"):
        load_split(str(list_dataset), str(extra), 32, input_mode="stream", classes=train)


def test_inaturalist_json_gives_species_names_and_the_same_images(list_dataset):
    inat = load_split(f"inat2018:{list_dataset}", "train", 32, input_mode="stream")
    text = load_split(str(list_dataset), "train.txt", 32, input_mode="stream")
    assert inat.class_names == [f"species_{c}" for c in range(4)]
    assert inat.labels.tolist() == text.labels.tolist()
    assert list(inat.images.files) == list(text.images.files)
    test = load_split(f"inat2018:{list_dataset}", "test", 32, input_mode="stream", classes=inat)
    assert test.paths[0].startswith("test/")


# --- sizes, modes, memory or disk ------------------------------------------------------------


def test_every_mode_and_size_decodes_to_rgb_at_the_asked_size(list_dataset):
    split = load_split(str(list_dataset), "train.txt", 20, input_mode="stream")
    modes = {Image.open(f).mode for f in split.images.files}
    assert {"L", "RGBA", "CMYK", "P", "LA"} <= modes
    streamed = next(iter(pipeline.eval_dataset(split.images, split.labels, 86)))[0].numpy()
    in_memory = load_split(str(list_dataset), "train.txt", 20, input_mode="memory").images
    assert streamed.shape == in_memory.shape == (86, 20, 20, 3)
    # TensorFlow (tf.data) and Pillow (in memory, and the JAX-only machine) decode and resize
    # the same files to the same pixels, up to rounding.
    difference = np.abs(streamed.astype(int) - in_memory.astype(int))
    assert difference.max() <= 1 and difference.mean() < 0.6, difference.mean()
    # The colour that identifies the class survives every mode but grayscale.
    for row, (label, path) in enumerate(zip(split.labels, split.images.files)):
        if Image.open(path).mode not in ("L", "LA", "P"):
            assert in_memory[row].reshape(-1, 3).mean(0).argmax() == label % 3


def test_mixed_sizes_default_to_224_and_say_so(list_dataset):
    said = []
    split = load_split(str(list_dataset), "train.txt", None, input_mode="stream",
                       log=said.append)
    assert split.images.shape[1:] == (224, 224, 3) and split.image_size == 224
    assert any("resizing to 224x224" in line for line in said)


def test_the_memory_budget_decides_and_the_flags_force(list_dataset):
    assert choose_input(100, 224, 224, "auto", budget_gb=1.0) == "memory"
    assert choose_input(100_000, 224, 224, "auto", budget_gb=1.0) == "stream"
    assert choose_input(100_000, 224, 224, "memory", budget_gb=1.0) == "memory"
    assert choose_input(1, 8, 8, "stream", budget_gb=1.0) == "stream"
    said = []
    tight = load_split(str(list_dataset), "train.txt", 32, memory_budget=0.0001, log=said.append)
    roomy = load_split(str(list_dataset), "train.txt", 32, memory_budget=1.0)
    assert isinstance(tight.images, ImageFiles) and isinstance(roomy.images, np.ndarray)
    assert any("streaming 86 images" in line for line in said)


def test_channel_statistics_of_a_streamed_set_match_the_decoded_ones(list_dataset):
    split = load_split(str(list_dataset), "train.txt", 16, input_mode="stream")
    estimated = np.array(channel_statistics(split.images))
    exact = np.array(channel_statistics(split.images.decode()))
    assert np.allclose(estimated, exact)  # 86 images: the sample is all of them


def test_streamed_images_refuse_to_become_one_array(list_dataset):
    split = load_split(str(list_dataset), "train.txt", 16, input_mode="stream")
    with pytest.raises(LTPLLError, match="--in-memory"):
        np.asarray(split.images)


# --- the index invariant ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def numbered_files(tmp_path_factory):
    """40 files whose pixels spell their row: R = row, G = 255 - row, of mixed sizes and types;
    row 13 is a corrupt file."""
    folder = tmp_path_factory.mktemp("numbered")
    files = []
    for row in range(40):
        size = 16 + (row % 5) * 7
        pixels = np.zeros((size, size + 3, 3), np.uint8)
        pixels[..., 0], pixels[..., 1] = row * 5, 255 - row * 5
        path = str(folder / f"{row:02d}.png")
        Image.fromarray(pixels).save(path)
        files.append(path)
    with open(files[13], "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really")
    return files


def _rows_of_pixels(images):
    return np.rint(images[:, 4, 4, 0].astype(float) / 5).astype(int)


def _candidates(num):
    """Row r's candidate set is {r % 7, (r // 7) % 7} in 7 classes: values, not counts."""
    candidates = np.zeros((num, 7), np.float32)
    candidates[np.arange(num), np.arange(num) % 7] = 1
    candidates[np.arange(num), (np.arange(num) // 7) % 7] = 1
    return candidates


def _check_aligned(batches, candidates, labels, steps, corrupt=13):
    seen = []
    for x, y in batches:
        x, index = np.asarray(x), np.asarray(y["index"])
        assert np.array_equal(_rows_of_pixels(x), index)
        assert np.array_equal(np.asarray(y["candidates"]), candidates[index])
        assert np.array_equal(np.asarray(y["label"]), labels[index])
        seen.append(index)
    assert len(seen) == steps
    assert corrupt not in np.concatenate(seen)
    return seen


@pytest.mark.parametrize("reader", ["tf.data", "PyDataset"])
def test_image_candidates_and_index_stay_aligned_through_shuffling(numbered_files, reader):
    images = ImageFiles(numbered_files, 12, 12)
    candidates, labels = _candidates(40), (np.arange(40) * 3) % 7
    steps = pipeline.steps_per_epoch(40, 8)
    if reader == "tf.data":
        batches = pipeline.stream_train_dataset(images, candidates, labels, 8, seed=3,
                                                epochs=2, initial_epoch=0)
        seen = _check_aligned(batches.as_numpy_iterator(), candidates, labels, 2 * steps)
    else:
        batches = pipeline.StreamedBatches(images, candidates, labels, 8, seed=3, workers=3)
        seen = _check_aligned((batches[b] for b in range(len(batches))), candidates, labels,
                              steps)
    first_epoch = np.concatenate(seen[:steps])
    assert sorted(first_epoch) != list(first_epoch)  # shuffled
    assert len(set(first_epoch.tolist())) >= 39 - 1  # each readable row once (one refill)


def test_streamed_epochs_follow_the_in_memory_order(numbered_files):
    readable = [f for i, f in enumerate(numbered_files) if i != 13]
    images = ImageFiles(readable, 12, 12)
    candidates, labels = _candidates(39), np.zeros(39, int)
    streamed = pipeline.stream_train_dataset(images, candidates, labels, 8, seed=5, epochs=3,
                                             initial_epoch=1)
    in_memory = pipeline.train_dataset(images.decode(), candidates, labels, 8, seed=5, epochs=3,
                                       initial_epoch=1)
    orders = [[np.asarray(y["index"]).tolist() for _, y in dataset.as_numpy_iterator()]
              for dataset in (streamed, in_memory)]
    assert orders[0] == orders[1] and len(orders[0]) == 2 * 4


def test_strict_streaming_stops_at_a_corrupt_file(numbered_files):
    import tensorflow as tf

    batches = pipeline.stream_train_dataset(ImageFiles(numbered_files, 12, 12), _candidates(40),
                                            None, 40, seed=0, strict=True)
    with pytest.raises(tf.errors.OpError):
        list(batches)


# --- whole runs ------------------------------------------------------------------------------


def _run_config(root, output, **data):
    return RunConfig(
        data=_data_config(root, input_mode="stream", **data),
        model=ModelConfig(backbone="tiny", method="corr", rebalancer="records"),
        train=TrainConfig(epochs=2, batch_size=16, lr=0.05, eval_every=2, seed=4),
        output=str(output),
    )


class _CrashInSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            raise RuntimeError("simulated crash")


def test_a_resumed_streamed_run_matches_an_uninterrupted_one(list_dataset, tmp_path):
    quiet = dict(log=lambda *_: None)
    whole, final_whole = train(_run_config(list_dataset, tmp_path / "whole"), **quiet)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_run_config(list_dataset, tmp_path / "crashed"),
              callbacks=[_CrashInSecondEpoch()], **quiet)
    keras.backend.clear_session()
    resumed, final_resumed = resume(str(tmp_path / "crashed"), **quiet)
    for a, b in zip(whole.variables, resumed.variables, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert final_resumed["top1"] == final_whole["top1"]


def test_streamed_and_in_memory_runs_of_the_same_files_learn_alike(list_dataset, tmp_path):
    streamed = prepare_data(_data_config(list_dataset, input_mode="stream"), 1,
                            log=lambda *_: None)
    in_memory = prepare_data(_data_config(list_dataset, input_mode="memory"), 1,
                             log=lambda *_: None)
    assert isinstance(streamed.images, ImageFiles)
    assert np.array_equal(streamed.candidates, in_memory.candidates)
    assert streamed.paths == in_memory.paths
    assert np.array_equal(streamed.images.decode(), in_memory.images)


def test_cli_trains_evaluates_and_exports_an_inaturalist_style_set(list_dataset, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(main, [
        "train", "--dataset", f"inat2018:{list_dataset}", "--stream", "--image-size", "24",
        "--backbone", "tiny", "--epochs", "2", "--batch-size", "16", "--lr", "0.05",
        "--dev-per-class", "2", "--output", str(run)])
    assert result.exit_code == 0, result.output
    assert "species_3" in result.output
    metrics = json.loads((run / "metrics.json").read_text())
    evaluated = runner.invoke(main, ["evaluate", str(run), "--output", str(tmp_path / "m.json")])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "m.json").read_text())["top1"] == pytest.approx(metrics["top1"])
    exported = runner.invoke(main, ["export", str(run), str(tmp_path / "export")])
    assert exported.exit_code == 0, exported.output
    photo = os.path.join(list_dataset, "test", "n02", "000.png")
    predicted = runner.invoke(main, ["predict", str(tmp_path / "export"), photo, "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert "species_" in predicted.output


@pytest.mark.parametrize("argv, words", [
    (["--train-list", "train.txt"], "--train-list and --test-list go together"),
    (["--train-list", "nope.txt", "--test-list", "test.txt"], "no list file 'nope.txt'"),
    (["--memory-budget", "-1"], "--memory-budget must be >= 0"),
])
def test_bad_list_flags_are_one_line_errors(list_dataset, tmp_path, argv, words):
    result = CliRunner().invoke(main, ["train", "--dataset", str(list_dataset), *argv,
                                       "--backbone", "tiny", "--epochs", "1",
                                       "--output", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_decode_file_converts_cmyk_and_downscales_large_jpegs(tmp_path):
    large = np.zeros((800, 1200, 3), np.uint8)
    large[:, :600] = (250, 10, 10)
    path = str(tmp_path / "large.jpg")
    Image.fromarray(large).convert("CMYK").save(path, quality=95)
    image = decode_file(path, 50, 50)
    assert image.shape == (50, 50, 3)
    assert image[25, 10, 0] > 200 and image[25, 40, 0] < 60


JAX_WITHOUT_TENSORFLOW = r"""
import json, sys
sys.modules["tensorflow"] = None  # the JAX-only GPU machine has no TensorFlow
import ltpll.environment
ltpll.environment.tensorflow_available = lambda: False
import numpy as np, keras
from tests.helpers import tiny_model
from ltpll.data.files import ImageFiles
from ltpll.data.pipeline import StreamedBatches, train_batches

files = json.loads(sys.argv[1])
candidates = np.eye(5, dtype="float32")[np.arange(len(files)) % 5]
served = []

class Recording(StreamedBatches):
    def __getitem__(self, batch):
        x, y = super().__getitem__(batch)
        rows = np.rint(x[:, 4, 4, 0] / 5).astype(int)
        served.append((self.epoch, batch, y["index"].tolist(), rows.tolist()))
        return x, y

images = ImageFiles(files, 12, 12)
batches, steps = train_batches(images, candidates, np.zeros(len(files)), 8, 3, epochs=3)
assert type(batches) is StreamedBatches
batches = Recording(images, candidates, None, 8, 3, workers=3)
model = tiny_model(np.zeros((len(files), 12, 12, 3), np.uint8), candidates, deterministic=False)
model.compile(optimizer=keras.optimizers.SGD(0.05))
model.fit(batches, epochs=3, steps_per_epoch=steps, shuffle=False, verbose=0)
expected = {e: batches.epoch_order(e).tolist() for e in range(3)}
print(json.dumps({"served": served, "expected": expected, "steps": steps}))
"""


def test_jax_without_tensorflow_trains_on_files_with_aligned_epochs(numbered_files):
    from tests.helpers import run_python

    readable = [f for i, f in enumerate(numbered_files) if i != 13]
    code = JAX_WITHOUT_TENSORFLOW.replace("json.loads(sys.argv[1])", repr(readable))
    out = json.loads(run_python(code, backend="jax").strip().splitlines()[-1])
    served = out["served"]
    assert len(served) == 3 * out["steps"]
    for epoch, batch, index, rows in served:
        # The pixels are those of the file the index names (file 13, corrupt, is not listed).
        assert rows == [r + (r >= 13) for r in index]
        assert index == out["expected"][str(epoch)][batch * 8:(batch + 1) * 8]


def test_an_undecodable_file_under_strict_or_in_the_test_list_is_one_line(list_dataset,
                                                                          tmp_path, monkeypatch):
    import ltpll.training

    # Past the normalisation statistics (whose sample skips the file, or names it under
    # --strict before training starts): the error comes from the input pipeline itself.
    monkeypatch.setattr(ltpll.training, "channel_statistics", lambda images: ((0.5,) * 3,) * 2)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    lines = (list_dataset / "train.txt").read_text()
    (tmp_path / "train.txt").write_text(lines + f"{corrupt} 0\n")
    (tmp_path / "test.txt").write_text((list_dataset / "test.txt").read_text() + f"{corrupt} 1\n")
    common = ["train", "--dataset", str(list_dataset), "--stream", "--image-size", "16",
              "--backbone", "tiny", "--epochs", "1", "--batch-size", "16"]
    for extra, words in ((["--strict", "--test-list", str(list_dataset / "test.txt")],
                          "an image file of the training set cannot be decoded"),
                         (["--test-list", str(tmp_path / "test.txt")],
                          "an image file of the images to predict cannot be decoded")):
        output = tmp_path / f"run{len(words)}"
        result = CliRunner().invoke(main, [*common, "--train-list", str(tmp_path / "train.txt"),
                                           *extra, "--output", str(output)])
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output


def test_channel_statistics_leave_out_an_undecodable_file(numbered_files):
    readable = [f for i, f in enumerate(numbered_files) if i != 13]
    with_corrupt = channel_statistics(ImageFiles(numbered_files, 12, 12), block=7)
    assert np.allclose(with_corrupt, channel_statistics(ImageFiles(readable, 12, 12).decode()))


def test_rotation_pretraining_streams_a_list_set_too(list_dataset, tmp_path):
    result = CliRunner().invoke(main, [
        "pretrain", "--dataset", str(list_dataset), "--train-list", "train.txt",
        "--test-list", "test.txt", "--stream", "--image-size", "16", "--backbone", "tiny",
        "--epochs", "1", "--batch-size", "16", "--output", str(tmp_path / "ssp")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ssp" / "pretrain.json").read_text())
    assert summary["epochs"] == 1 and 0 <= summary["rotation_accuracy"] <= 1
