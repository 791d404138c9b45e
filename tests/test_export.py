"""`ltpll export` and `ltpll predict`: the SavedModel serves what the Keras model predicts, in a
process that never imports ltpll, and bad input ends in one line with nothing half-written.

One tiny run is trained and exported once for the whole module.
"""

import filecmp
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ltpll.cli.main import main
from tests.helpers import FOLDER_CLASSES as CLASSES
from tests.helpers import run_python

pytest.importorskip("tensorflow")

OUTPUTS = ("probabilities", "class_id", "class_name")


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def assert_user_error(result, needle):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error:"), result.output
    assert sum(line.startswith("error:") for line in lines) == 1, result.output
    assert needle in lines[-1], result.output


def read_json(*parts):
    with open(os.path.join(*parts)) as handle:
        return json.load(handle)


def leftovers(out_dir):
    """The export directory and any temporary sibling of it."""
    return glob.glob(f"{out_dir}*")


@pytest.fixture(scope="module")
def run_dir(image_folder, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("export-run") / "run")
    result = invoke("train", "--dataset", image_folder, "--records", "--backbone", "tiny",
                    "--epochs", "1", "--batch-size", "8", "--imbalance-ratio", "2",
                    "--seed", "5", "--output", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export-out") / "export")
    started = time.time()
    result = invoke("export", run_dir, out)
    seconds = time.time() - started
    assert result.exit_code == 0, result.output
    assert "serving_default" in result.output
    print(f"export of the tiny run took {seconds:.1f}s")
    return out


@pytest.fixture(scope="module")
def reference(run_dir, image_folder):
    """The test images and the Keras model's probabilities on them (what evaluate computes)."""
    from ltpll.metrics import predict_logits
    from ltpll.saving import load_run

    _, counts, model = load_run(run_dir)
    files = sorted(glob.glob(os.path.join(image_folder, "test", "*", "*.png")))
    images = np.stack([np.asarray(Image.open(file).convert("RGB")) for file in files])
    return {
        "model": model,
        "class_names": counts["class_names"],
        "files": files,
        "labels": [CLASSES.index(os.path.basename(os.path.dirname(f))) for f in files],
        "images": images,
        "probabilities": softmax(predict_logits(model, images)),
    }


def test_saved_model_matches_keras_in_a_process_without_ltpll(exported, reference, run_dir,
                                                               tmp_path):
    import tensorflow as tf

    from ltpll.export import _fit
    from ltpll.metrics import predict_logits

    model, images = reference["model"], reference["images"]
    # Other sizes and formats: twice as large (resized in the graph) and JPEG (decoded with the
    # accurate integer DCT, as in training: Pillow's pixels exactly).
    large = np.repeat(np.repeat(images[:4], 2, axis=1), 2, axis=2)
    large_files, jpeg_files, jpeg_pixels = [], [], []
    for i, image in enumerate(large):
        large_files.append(str(tmp_path / f"large{i}.png"))
        Image.fromarray(image).save(large_files[-1])
    for i, image in enumerate(images[:4]):
        jpeg_files.append(str(tmp_path / f"small{i}.jpg"))
        Image.fromarray(image).save(jpeg_files[-1], quality=90)
        jpeg_pixels.append(np.asarray(Image.open(jpeg_files[-1]).convert("RGB")))
    resized = _fit(tf, tf.constant(large), *model.image_shape[:2]).numpy()
    expected = np.concatenate([
        reference["probabilities"],
        softmax(predict_logits(model, resized)),
        softmax(predict_logits(model, np.stack(jpeg_pixels))),
    ])
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "large.npy", large)
    encoded = reference["files"] + large_files + jpeg_files

    stdout = run_python(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf

        loaded = tf.saved_model.load({exported!r})
        files = {encoded!r}
        data = tf.constant([open(file, "rb").read() for file in files])
        serve, serve_uint8 = loaded.signatures["serving_default"], loaded.signatures["serve_uint8"]
        results = {{
            "encoded": serve(images=data),
            "uint8": serve_uint8(images=tf.constant(np.load({str(tmp_path / "images.npy")!r}))),
            "large": serve_uint8(images=tf.constant(np.load({str(tmp_path / "large.npy")!r}))),
        }}
        out = {{name: {{"probabilities": r["probabilities"].numpy().tolist(),
                        "class_id": r["class_id"].numpy().tolist(),
                        "class_name": [n.decode() for n in r["class_name"].numpy()],
                        "dtypes": [r[k].dtype.name for k in {OUTPUTS!r}]}}
               for name, r in results.items()}}
        assert "ltpll" not in sys.modules and not any(m.startswith("ltpll.") for m in sys.modules)
        print(json.dumps(out))
    """)
    out = json.loads(stdout.strip().splitlines()[-1])
    n = len(images)
    got = {
        "encoded": expected,
        "uint8": expected[:n],
        "large": expected[n:n + len(large)],
    }
    for name, want in got.items():
        result = out[name]
        assert result["dtypes"] == ["float32", "int64", "string"], name
        np.testing.assert_allclose(result["probabilities"], want, atol=1e-5, err_msg=name)
        assert result["class_id"] == np.argmax(result["probabilities"], axis=1).tolist(), name
        assert result["class_name"] == [reference["class_names"][c] for c in result["class_id"]]
    # Same accuracy as `ltpll train` / `ltpll evaluate` measured on the test split.
    metrics = read_json(run_dir, "metrics.json")
    top1 = np.mean(np.array(out["encoded"]["class_id"][:n]) == reference["labels"])
    assert np.isclose(top1, metrics["top1"])


def test_graph_resize_is_within_one_grey_level_of_pillow():
    import tensorflow as tf

    from ltpll.export import _fit

    rng = np.random.default_rng(1)
    for (height, width), size in (((32, 32), 16), ((16, 16), 24), ((40, 28), 16), ((17, 23), 16)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pillow = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
        graph = _fit(tf, tf.constant(image), size, size).numpy()
        difference = np.abs(np.asarray(pillow, dtype=int) - graph.astype(int))
        assert difference.max() <= 1, ((height, width), size, difference.max())
    same = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_fit(tf, tf.constant(same), 16, 16).numpy(), same)


def test_saved_model_cli_lists_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed")
    done = subprocess.run([cli, "show", "--dir", exported, "--all"], check=False,
                          capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    for signature in ("serving_default", "serve_uint8"):
        assert f"signature_def['{signature}']" in done.stdout, done.stdout
    for output in OUTPUTS:
        assert f"outputs['{output}']" in done.stdout, done.stdout
    assert "inputs['images']" in done.stdout
    assert "DT_STRING" in done.stdout and "DT_UINT8" in done.stdout


def test_assets_and_keras_copy(exported, reference, run_dir):
    import keras

    from ltpll.metrics import predict_logits

    with open(os.path.join(exported, "assets", "class_names.txt")) as handle:
        assert handle.read().splitlines() == reference["class_names"] == CLASSES
    prior = read_json(exported, "assets", "prior.json")
    assert prior["class_names"] == CLASSES
    np.testing.assert_allclose(prior["prior"], reference["model"].estimated_prior(), atol=1e-6)
    assert not np.allclose(prior["prior"], 1 / 3, atol=1e-4)   # RECORDS moved it after one epoch
    info = read_json(exported, "assets", "ltpll.json")
    assert info["format"] == "ltpll-export" and info["image_shape"] == [16, 16, 3]

    copy = os.path.join(exported, "model.keras")
    assert filecmp.cmp(copy, os.path.join(run_dir, "model.keras"), shallow=False)
    reloaded = keras.saving.load_model(copy)
    np.testing.assert_allclose(softmax(predict_logits(reloaded, reference["images"])),
                               reference["probabilities"], atol=1e-6)


def test_predict_json_and_table(exported, reference, image_folder, monkeypatch):
    files = reference["files"][:1] + reference["files"][-1:]
    result = invoke("predict", exported, *files, "--json", "--top-k", "2")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    assert [p["image"] for p in predictions] == files
    for prediction, probabilities in zip(predictions, reference["probabilities"][[0, -1]]):
        order = np.argsort(-probabilities)[:2]
        assert [guess["class_id"] for guess in prediction["top_k"]] == order.tolist()
        assert [guess["class_name"] for guess in prediction["top_k"]] == [CLASSES[c] for c in order]
        np.testing.assert_allclose([guess["probability"] for guess in prediction["top_k"]],
                                   probabilities[order], atol=1e-5)

    monkeypatch.chdir(image_folder)
    relative = [os.path.relpath(file, image_folder) for file in files]
    result = invoke("predict", exported, *relative)
    assert result.exit_code == 0, result.output
    for name in relative:
        assert name in result.output
    assert "#3" in result.output and "#4" not in result.output   # --top-k 3 by default
    top = CLASSES[int(np.argmax(reference["probabilities"][0]))]
    assert top in result.output


def test_export_errors_leave_nothing_behind(run_dir, tmp_path):
    out = str(tmp_path / "export")

    assert_user_error(invoke("export", str(tmp_path / "missing"), out), "does not exist")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(os.path.join(run_dir, "config.json"), unfinished / "config.json")
    assert_user_error(invoke("export", str(unfinished), out), "not a finished ltpll run")
    assert leftovers(out) == []

    os.makedirs(out)
    (tmp_path / "export" / "keep").write_text("mine")
    assert_user_error(invoke("export", run_dir, out), "not empty")
    assert os.listdir(out) == ["keep"] and leftovers(out) == [out]
    not_a_dir = str(tmp_path / "file")
    open(not_a_dir, "w").close()
    assert_user_error(invoke("export", run_dir, not_a_dir), "not a directory")


def test_failed_export_removes_its_temporary_directory(run_dir, tmp_path, monkeypatch):
    import ltpll.export as export_lib

    def fail(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_lib, "_write_metadata", fail)
    out = str(tmp_path / "export")
    with pytest.raises(RuntimeError, match="disk full"):
        export_lib.export(run_dir, out)
    assert os.listdir(tmp_path) == []

    # An existing empty directory is fine to export into.
    monkeypatch.undo()
    os.makedirs(out)
    export_lib.export(run_dir, out)
    assert os.path.exists(os.path.join(out, "saved_model.pb"))
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_predict_errors(exported, reference, run_dir, tmp_path):
    good = reference["files"][0]
    missing = str(tmp_path / "missing.png")
    assert_user_error(invoke("predict", exported, good, missing), f"image {missing} does not exist")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    assert_user_error(invoke("predict", exported, good, str(not_an_image)),
                      f"cannot decode image {not_an_image}")
    assert_user_error(invoke("predict", run_dir, good), "is not an ltpll export")
    assert_user_error(invoke("predict", str(tmp_path / "nowhere"), good), "does not exist")
    assert_user_error(invoke("predict", exported, good, "--top-k", "0"), "--top-k must be >= 1")


def test_a_mixed_bfloat16_run_is_served_in_float32(image_folder, tmp_path, reference):
    """A run trained in bf16 (the default on a CPU with native bf16) exports a float32 graph,
    which runs at full speed on any CPU; the weights are the same."""
    import tensorflow as tf

    from ltpll.metrics import predict_logits
    from ltpll.saving import load_run

    run, out = str(tmp_path / "run"), str(tmp_path / "export")
    result = invoke("train", "--dataset", image_folder, "--backbone", "tiny", "--epochs", "1",
                    "--batch-size", "8", "--seed", "5", "--precision", "mixed_bfloat16",
                    "--output", run)
    assert result.exit_code == 0, result.output
    assert invoke("export", run, out).exit_code == 0
    _, _, trained = load_run(run)
    _, _, full = load_run(run, precision="float32")
    for model, dtype in ((trained, "bfloat16"), (full, "float32")):
        conv = next(layer for layer in model.backbone.layers if "conv" in layer.name)
        assert conv.compute_dtype == dtype
    for a, b in zip(trained.get_weights(), full.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    images = reference["images"]
    served = tf.saved_model.load(out).signatures["serve_uint8"](images=tf.constant(images))
    served = served["probabilities"].numpy()
    np.testing.assert_allclose(served, softmax(predict_logits(full, images)), atol=1e-5)
    assert not np.allclose(served, softmax(predict_logits(trained, images)), atol=1e-5)
