"""Exports a finished run as a TensorFlow SavedModel that classifies image files, and reads it back.

A run's ``model.keras`` needs ltpll installed (its custom layers) and uint8 arrays already at the
training size, so it cannot be handed to TensorFlow Serving or to a service that receives JPEG
uploads. :func:`export` writes a self-contained SavedModel instead; loading it needs TensorFlow
only. It has two signatures:

* ``serving_default``: ``images``, a ``[None]`` batch of encoded images (JPEG, PNG, GIF, BMP);
* ``serve_uint8``: ``images``, a ``[None, H, W, 3]`` uint8 batch of any size.

Both decode and resize as training did and return ``probabilities`` (softmax of the debiased
logits ``logits - log prior``: the RECORDS prior is already removed), ``class_id`` (int64) and
``class_name`` (string). Decoding: JPEGs with the accurate integer DCT, as the training loader, so
pixels match exactly. Resizing: images already at the model's size pass through unchanged
(bit-exact); others get TensorFlow's antialiased bilinear resize, which approximates the Pillow
bilinear filter ``--image-size`` used in training (pixels differ by at most one grey level in the
tests, from rounding).

An export directory (:data:`EXPORT_FILES`) is written beside its target and renamed into place
only when complete, so a crash or Ctrl-C never leaves a half-written export.
"""

import json
import os
import shutil
import tempfile

from ltpll.errors import LTPLLError
from ltpll.fileio import DirectoryNotMoved, atomic_directory

# What an export directory holds (beside the SavedModel's own variables/ and fingerprint.pb).
EXPORT_FILES = {
    "saved_model": "saved_model.pb",            # the graph, with both signatures
    "keras": "model.keras",                     # a copy of the run's model, for Keras users
    "class_names": "assets/class_names.txt",    # one class name per line, in class-id order
    "prior": "assets/prior.json",               # the class prior removed from the logits
    "info": "assets/ltpll.json",                # marks an ltpll export: format, image shape...
}

SERVE_ENCODED = "serving_default"
SERVE_UINT8 = "serve_uint8"
INPUT_NAME = "images"
FORMAT = "ltpll-export"
FORMAT_VERSION = 1
PREDICT_BATCH_SIZE = 64


def _tensorflow():
    """Imports TensorFlow, or explains that exports need it."""
    try:
        import tensorflow as tf
    except ImportError:
        raise LTPLLError("export needs TensorFlow: pip install tensorflow") from None
    return tf


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export(run_dir, out_dir):
    """Writes the SavedModel, its assets and a ``.keras`` copy of a finished run to ``out_dir``.

    Args:
        run_dir: a run directory written by ``ltpll train``.
        out_dir: where the export goes; must not exist, or be an empty directory.

    Returns:
        ``out_dir``.

    Raises:
        LTPLLError: if the run is missing or unfinished, ``out_dir`` is not empty, TensorFlow is
            missing or Keras runs on another backend. Nothing is left at ``out_dir`` then.
    """
    tf = _tensorflow()
    import keras

    from ltpll.run_dir import RUN_FILES
    from ltpll.saving import load_run

    if keras.backend.backend() != "tensorflow":
        raise LTPLLError("export needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
                         f"Keras runs on {keras.backend.backend()}")
    out_dir = os.path.normpath(os.fspath(out_dir))
    _check_output(out_dir)
    # Served in float32 whatever the run trained in: a mixed_bfloat16 run from a CPU with
    # native bf16 would otherwise run emulated, several times slower, on one without.
    _, counts, model = load_run(run_dir, precision="float32")
    class_names = [str(name) for name in counts["class_names"]]
    _check_class_names(class_names)

    try:
        with atomic_directory(out_dir) as tmp:
            _write_saved_model(tf, model, class_names, tmp)
            shutil.copyfile(os.path.join(run_dir, RUN_FILES["model"]),
                            os.path.join(tmp, EXPORT_FILES["keras"]))
            _write_metadata(tmp, model, class_names)
    except DirectoryNotMoved as error:
        raise LTPLLError(f"cannot move the export into {out_dir}: {error.reason}") from None
    return out_dir


def _check_output(out_dir):
    """Refuses to overwrite anything: ``out_dir`` must be absent or an empty directory."""
    if os.path.isdir(out_dir):
        if os.listdir(out_dir):
            raise LTPLLError(f"{out_dir} exists and is not empty; choose another directory or "
                             "delete it")
    elif os.path.exists(out_dir):
        raise LTPLLError(f"{out_dir} exists and is not a directory")


def _check_class_names(class_names):
    bad = [name for name in class_names if not name or "\n" in name or "\r" in name]
    if bad:
        raise LTPLLError(f"class names must be non-empty single lines to export; received {bad!r}")


def _write_saved_model(tf, model, class_names, path):
    """The SavedModel with both signatures; ``class_names.txt`` becomes its lookup-table asset."""
    from keras.export import ExportArchive

    height, width = (int(d) for d in model.image_shape[:2])
    with tempfile.TemporaryDirectory() as scratch:
        # The table reads the file when the SavedModel loads; saving copies it into assets/.
        names_file = os.path.join(scratch, os.path.basename(EXPORT_FILES["class_names"]))
        with open(names_file, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("".join(f"{name}\n" for name in class_names))
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                names_file,
                key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
                value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                vocab_size=len(class_names),
            ),
            default_value="",
        )

        def classify(images):
            probabilities = tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))
            class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
            return {"probabilities": probabilities, "class_id": class_id,
                    "class_name": table.lookup(class_id)}

        def serve_encoded(images):
            decoded = tf.map_fn(
                lambda data: _decode(tf, data, height, width), images,
                fn_output_signature=tf.TensorSpec((height, width, 3), tf.uint8),
            )
            return classify(decoded)

        def serve_uint8(images):
            return classify(tf.ensure_shape(_fit(tf, images, height, width),
                                            (None, height, width, 3)))

        archive = ExportArchive()
        archive.track(table)  # so the table and its asset are saved
        # Registered under "serving_default" itself: the signature TF Serving calls by default.
        archive.add_endpoint(SERVE_ENCODED, serve_encoded, input_signature=[
            tf.TensorSpec((None,), tf.string, name=INPUT_NAME)])
        archive.add_endpoint(SERVE_UINT8, serve_uint8, input_signature=[
            tf.TensorSpec((None, None, None, 3), tf.uint8, name=INPUT_NAME)])
        archive.write_out(path, verbose=False)


def _decode(tf, data, height, width):
    """One encoded image to uint8 ``[height, width, 3]``, decoded and resized as in training."""
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    return tf.ensure_shape(_fit(tf, image, height, width), (height, width, 3))


def _fit(tf, images, height, width):
    """Resizes uint8 images (``[H, W, 3]`` or a batch) to ``height x width`` unless already so.

    Antialiased bilinear, rounded: close to Pillow's bilinear filter that ``--image-size`` uses.
    """
    size = tf.shape(images)[-3:-1]

    def resized():
        scaled = tf.image.resize(images, (height, width), method="bilinear", antialias=True)
        return tf.saturate_cast(tf.round(scaled), tf.uint8)

    return tf.cond(tf.reduce_all(tf.equal(size, [height, width])), lambda: images, resized)


def _write_metadata(path, model, class_names):
    from ltpll import __version__
    from ltpll.fileio import write_json

    prior = [float(p) for p in model.estimated_prior()]
    write_json(os.path.join(path, EXPORT_FILES["prior"]), {
        "class_names": class_names,
        "prior": prior,
    })
    write_json(os.path.join(path, EXPORT_FILES["info"]), {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ltpll_version": __version__,
        "image_shape": [int(d) for d in model.image_shape],
        "num_classes": len(class_names),
        "signatures": {
            SERVE_ENCODED: f"{INPUT_NAME}: string [None] encoded JPEG/PNG/GIF/BMP",
            SERVE_UINT8: f"{INPUT_NAME}: uint8 [None, H, W, 3], any H and W",
        },
        "outputs": ["probabilities", "class_id", "class_name"],
    })


# --------------------------------------------------------------------------------------------
# Reading an export back
# --------------------------------------------------------------------------------------------


class LoadedExport:
    """An export directory loaded with ``tf.saved_model.load`` (ltpll's own code is not needed).

    Attributes:
        path: the export directory.
        serve: the ``serving_default`` signature (keyword ``images``: encoded image strings).
        class_names: list of class names, in class-id order.
        prior: the class prior removed from the logits, as a list of floats.
        info: the contents of ``assets/ltpll.json``.
    """

    def __init__(self, path, serve, class_names, prior, info):
        self.path, self.serve = path, serve
        self.class_names, self.prior, self.info = class_names, prior, info


def load_export(path):
    """Loads an export directory written by :func:`export`.

    Raises:
        LTPLLError: if ``path`` is not an ltpll export or cannot be loaded.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise LTPLLError(f"export directory {path} does not exist")
    for key in ("saved_model", "info", "class_names", "prior"):
        if not os.path.isfile(os.path.join(path, EXPORT_FILES[key])):
            raise LTPLLError(f"{path} is not an ltpll export (no {EXPORT_FILES[key]}); "
                             "write one with `ltpll export RUN_DIR OUT_DIR`")
    try:
        with open(os.path.join(path, EXPORT_FILES["info"]), encoding="utf-8") as handle:
            info = json.load(handle)
        with open(os.path.join(path, EXPORT_FILES["prior"]), encoding="utf-8") as handle:
            prior = json.load(handle)["prior"]
        with open(os.path.join(path, EXPORT_FILES["class_names"]), encoding="utf-8",
                  newline="") as handle:
            class_names = handle.read().split("\n")[:-1]  # one per line, "\n"-terminated
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LTPLLError(f"{path} is not a readable ltpll export: {error}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise LTPLLError(f"{path} is not an ltpll export ({EXPORT_FILES['info']} has no "
                         f"format {FORMAT!r})")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise LTPLLError(f"{path} was written by a newer ltpll (export format "
                         f"{info['format_version']}); upgrade ltpll to read it")
    tf = _tensorflow()
    from google.protobuf.message import DecodeError

    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, KeyError, DecodeError, tf.errors.OpError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LTPLLError(f"cannot load the SavedModel in {path}: {first_line}") from None
    if SERVE_ENCODED not in loaded.signatures:
        raise LTPLLError(f"{path} has no {SERVE_ENCODED!r} signature")
    return LoadedExport(path, loaded.signatures[SERVE_ENCODED], class_names, prior, info)


def predict_files(export_dir, paths, top_k=3, batch_size=PREDICT_BATCH_SIZE):
    """Classifies image files with an export's ``serving_default`` signature.

    Args:
        export_dir: an export directory, or a :class:`LoadedExport`.
        paths: image files (JPEG, PNG, GIF, BMP), any size.
        top_k: how many classes to report per image (at most the number of classes).
        batch_size: images per call of the signature.

    Returns:
        One dict per path, in order: ``{"image": path, "top_k": [{"class_name", "class_id",
        "probability"}, ...]}``, most probable class first.

    Raises:
        LTPLLError: if ``top_k < 1``, a file is missing, or an image cannot be decoded.
    """
    if top_k < 1:
        raise LTPLLError(f"--top-k must be >= 1; received {top_k}")
    exported = export_dir if isinstance(export_dir, LoadedExport) else load_export(export_dir)
    paths = [os.fspath(p) for p in paths]
    for path in paths:  # before any work: a typo in the last name should fail at once
        if not os.path.isfile(path):
            raise LTPLLError(f"image {path} does not exist" if not os.path.exists(path)
                             else f"image {path} is not a file")
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        probabilities = _classify(exported, chunk)
        results += [_top_k(path, row, exported.class_names, top_k)
                    for path, row in zip(chunk, probabilities)]
    return results


def _read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise LTPLLError(f"cannot read image {path}: {error.strerror}") from None


def _classify(exported, paths):
    """``[len(paths), C]`` probabilities; names the first file that does not decode."""
    import numpy as np

    tf = _tensorflow()
    data = [_read_bytes(path) for path in paths]
    try:
        return np.asarray(exported.serve(**{INPUT_NAME: tf.constant(data)})["probabilities"])
    except tf.errors.InvalidArgumentError:
        for path, one in zip(paths, data):  # which one? decode alone to name it
            try:
                exported.serve(**{INPUT_NAME: tf.constant([one])})
            except tf.errors.InvalidArgumentError:
                raise LTPLLError(f"cannot decode image {path}: not a JPEG, PNG, GIF or BMP "
                                 "image, or a damaged one") from None
        raise


def _top_k(path, probabilities, class_names, top_k):
    order = sorted(range(len(probabilities)), key=lambda c: -float(probabilities[c]))[:top_k]
    return {"image": path, "top_k": [
        {"class_name": class_names[c], "class_id": int(c), "probability": float(probabilities[c])}
        for c in order
    ]}
