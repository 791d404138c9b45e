"""Large-dataset checks on this machine: input-pipeline images/s, peak memory of a streamed run
against an in-memory one, and the ResNet-50 training step at 224 px.

Usage (``make bench-scale-cpu`` runs the first; TensorFlow backend)::

    KERAS_BACKEND=tensorflow python benchmarks/bench_scale.py [--images 5000]
        [--output runs/bench-scale-cpu] [--skip-train] [--skip-resnet50]

1. **Data.** ``--images`` ImageNet-like JPEGs (500x375 or 375x500, quality 90, smooth random
   colour gradients under grain noise: about 100 KB a file, like ImageNet's) in 10 long-tailed
   classes, plus ``--test-images`` for the test list, are written once in ImageNet-LT layout
   (``train/<class>/<file>.jpg``, ``train.txt`` / ``test.txt`` of ``path label`` lines, in a
   shuffled order, and ``train-<k>.txt`` with the first ``--small-images`` lines) under
   ``ltpll.data.sources.default_cache_dir()/bench-scale``. A marker written last makes later
   runs reuse them.
2. **Input pipeline**, images/s at ``--image-size`` 224 and batch 64, each measured over
   ``--timed-batches`` batches after ``--warmup-batches`` (a new pipeline each time):
   ltpll's streamed tf.data (decode + resize), the same with both RECORDS views computed the
   way the model computes them (``WeakAugment`` + ``StrongAugment``, XLA, in the consuming
   thread while tf.data decodes ahead), ``keras.utils.image_dataset_from_directory`` on the same
   files (alone and with both views), the random-resized crop moved into the pipeline (one read,
   ``tf.image.sample_distorted_bounding_box`` + ``tf.image.decode_and_crop_jpeg`` per view,
   resized to 224: alone, and with the rest of both views on the device), ltpll's Pillow
   ``StreamedBatches`` (a ``PyDataset``, 2 and 4 worker threads, through Keras' own adapter),
   and grain when a Python with grain is found (``--grain-python``; see below).
   Images/s count source images: a row with "both views" makes two 224-px views of each.
3. **Peak RSS** of real ``ltpll train`` runs (tiny backbone, 224 px, 1 epoch, batch 32, test
   every epoch) on the first ``--small-images`` training images and on all of them,
   ``--stream`` and ``--in-memory``, each a fresh process with its own empty
   ``XDG_CACHE_HOME`` (no decode cache reused). Peak RSS is the child's ``ru_maxrss`` from
   ``os.wait4``.
4. **ResNet-50** at 224 px: ``ltpll bench-step --backbone resnet50 --image-size 224
   --batch-size 16 --steps 3`` (the full CORR + RECORDS step, two views, against the bare
   backbone).

Markdown tables go to stdout and ``<output>/results.md``; the training logs to
``<output>/logs``. About 12 minutes on a 2-core CPU with 5,000 images.

grain is not a dependency of ltpll. To measure it, install it into a separate throw-away
virtual environment that sees this one's packages, e.g.::

    python3 -m venv /tmp/ltpll-grain-venv
    echo "$PWD/.venv/lib/python3.11/site-packages" > \\
        /tmp/ltpll-grain-venv/lib/python3.11/site-packages/project-venv.pth
    /tmp/ltpll-grain-venv/bin/pip install grain

(``--grain-python`` defaults to ``/tmp/ltpll-grain-venv/bin/python`` when it exists.)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

NUM_CLASSES = 10
#: Largest / smallest class of the generated training set (exponential profile).
IMBALANCE = 10.0
#: (height, width): ImageNet's two most common sizes, landscape about 3 times out of 4.
SIZES = ((375, 500), (500, 375))
JPEG_QUALITY = 90
MARKER = ".complete.json"
DEFAULT_GRAIN_PYTHON = "/tmp/ltpll-grain-venv/bin/python"


# ---------------------------------------------------------------------------------------------
# 1. The data set
# ---------------------------------------------------------------------------------------------


def class_counts(total: int) -> list[int]:
    """``total`` images over NUM_CLASSES classes, exponentially long-tailed (rho=IMBALANCE)."""
    weights = IMBALANCE ** (-np.arange(NUM_CLASSES) / (NUM_CLASSES - 1))
    counts = np.floor(weights / weights.sum() * total).astype(int)
    counts[0] += total - counts.sum()
    return [int(c) for c in counts]


def _noise_tile(seed: int = 0, size: int = 640) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (size, size, 3)).astype(np.float32)


def make_image(index: int, tile: np.ndarray, seed: int = 0):
    """One ImageNet-like photo stand-in: a smooth random colour field under grain noise."""
    from PIL import Image

    rng = np.random.default_rng([seed, index])
    height, width = SIZES[0] if rng.random() < 0.75 else SIZES[1]
    coarse = rng.uniform(0, 255, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3))
    field = Image.fromarray(coarse.astype(np.uint8)).resize((width, height),
                                                            Image.Resampling.BICUBIC)
    top = int(rng.integers(0, tile.shape[0] - height + 1))
    left = int(rng.integers(0, tile.shape[1] - width + 1))
    sigma = rng.uniform(16.0, 28.0)
    pixels = np.asarray(field, np.float32) + sigma * tile[top:top + height, left:left + width]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate_dataset(root: Path, num_train: int, num_test: int, num_small: int,
                     seed: int = 0) -> dict:
    """Writes the JPEGs and lists under ``root`` once; returns the marker's contents."""
    marker = root / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("train") == num_train and info.get("test") == num_test:
            small = root / f"train-{num_small}.txt"
            if not small.is_file():
                lines = (root / "train.txt").read_text().splitlines()[:num_small]
                small.write_text("\n".join(lines) + "\n")
            info["reused"] = True
            return info
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    entries = []  # (split, relative path, label)
    for split, counts in (("train", class_counts(num_train)),
                          ("test", [num_test // NUM_CLASSES + (c < num_test % NUM_CLASSES)
                                    for c in range(NUM_CLASSES)])):
        for label, count in enumerate(counts):
            folder = root / split / f"class_{label:02d}"
            folder.mkdir(parents=True)
            entries += [(split, f"{split}/class_{label:02d}/{split}_{label:02d}_{i:05d}.jpg",
                         label) for i in range(count)]
    tile = _noise_tile(seed)

    def write(item):
        index, (_, path, _) = item
        image = make_image(index, tile, seed)
        image.save(root / path, "JPEG", quality=JPEG_QUALITY)
        return os.path.getsize(root / path)

    started = time.perf_counter()
    workers = min(32, (os.cpu_count() or 1) + 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(write, enumerate(entries), chunksize=32))
    seconds = time.perf_counter() - started
    for split in ("train", "test"):
        rows = [(p, lab) for s, p, lab in entries if s == split]
        order = rng.permutation(len(rows))
        (root / f"{split}.txt").write_text("".join(f"{rows[i][0]} {rows[i][1]}\n"
                                                   for i in order))
    lines = (root / "train.txt").read_text().splitlines()[:num_small]
    (root / f"train-{num_small}.txt").write_text("\n".join(lines) + "\n")
    info = {"train": num_train, "test": num_test, "seconds": seconds, "workers": workers,
            "bytes": int(sum(sizes)), "mean_kb": float(np.mean(sizes) / 1024),
            "class_counts": class_counts(num_train)}
    marker.write_text(json.dumps(info))  # last: a half-written set is regenerated
    info["reused"] = False
    return info


def read_lists(root: Path):
    """``(files, labels)`` of train.txt with absolute paths."""
    files, labels = [], []
    for line in (root / "train.txt").read_text().splitlines():
        path, label = line.split()
        files.append(str(root / path))
        labels.append(int(label))
    return files, np.asarray(labels, np.int32)


# ---------------------------------------------------------------------------------------------
# 2. Input pipelines
# ---------------------------------------------------------------------------------------------


def _busy_seconds() -> float:
    """CPU-seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU-seconds of this process and its reaped children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Contention:
    """Share of the machine's CPU that *other* processes used during a ``with`` block."""

    def __enter__(self):
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc):
        wall, busy, own = (time.perf_counter() - self._start[0],
                           _busy_seconds() - self._start[1], _own_seconds() - self._start[2])
        self.others = max(0.0, busy - own) / (wall * (os.cpu_count() or 1))
        return False


class Timer:
    """Images/s of an iterator of batches: ``warmup`` batches untimed, then ``timed`` batches.
    ``others`` is then the CPU share other processes took during the timed batches."""

    def __init__(self, warmup: int, timed: int):
        self.warmup, self.timed = warmup, timed
        self.others = None

    def __call__(self, batches, consume=None) -> float:
        consume = consume or _materialise
        iterator = iter(batches)
        for _ in range(self.warmup):
            consume(next(iterator))
        count = 0
        with Contention() as contention:
            started = time.perf_counter()
            for _ in range(self.timed):
                count += consume(next(iterator))
            seconds = time.perf_counter() - started
        self.others = contention.others
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        del iterator
        gc.collect()
        return count / seconds


def _first(batch):
    return batch[0] if isinstance(batch, tuple) else batch


def _materialise(batch) -> int:
    """Waits for a batch (or a tuple of view batches) to exist on the host; its image count."""
    images = _first(batch)
    if isinstance(images, tuple):  # two views
        for view in images:
            np.asarray(view[0, 0, 0])
        return int(images[0].shape[0])
    np.asarray(images[0, 0, 0])
    return int(images.shape[0])


def _device_views():
    """Both RECORDS views of a batch as the model makes them (XLA, in the consuming thread)."""
    import tensorflow as tf

    from ltpll.models.augment import StrongAugment, WeakAugment

    weak, strong = WeakAugment(seed=0), StrongAugment(seed=1)
    return tf.function(lambda x: (weak(x), strong(x)), jit_compile=True)


def _device_views_without_crop():
    """Both views with the random-resized crop pinned to the whole frame: flip, colour jitter,
    grayscale (weak) and RandAugment + cutout (strong) as in the model, for batches that were
    already cropped in the pipeline. The (identity) bilinear resampling still runs."""
    import keras
    import tensorflow as tf

    from ltpll.models import augment

    n = augment.CROP_ATTEMPTS
    # area fraction u=1 -> the whole frame; log-ratio u=0.5 -> ratio 1; corner u=0 -> (0, 0).
    identity = np.concatenate([np.ones(n), np.full(n, 0.5), np.zeros(2)]).astype(np.float32)
    assert identity.size == augment._CROP_UNIFORMS
    num_ops = augment.StrongAugment().num_ops
    weak_count, strong_count = augment._WEAK_UNIFORMS, augment._strong_uniforms(num_ops)
    seeds = keras.random.SeedGenerator(2)

    def pinned(batch, count):
        u = keras.random.uniform((tf.shape(batch)[0], count), seed=seeds)
        crop = tf.broadcast_to(identity, (tf.shape(batch)[0], identity.size))
        return tf.concat([crop, u[:, identity.size:]], axis=1)

    def views(weak_crops, strong_crops):
        return (augment.weak_view(weak_crops, pinned(weak_crops, weak_count)),
                augment.strong_view(strong_crops, pinned(strong_crops, strong_count), num_ops))

    return tf.function(views, jit_compile=True)


def _pipeline_crop_dataset(files, size, batch_size, scale, seed=0):
    """tf.data that reads each file once and decodes two random-resized crops of it straight
    from the JPEG (``decode_and_crop_jpeg``), each resized to ``size`` (bilinear, antialiased):
    ``((weak_crops, strong_crops), rows)`` uint8 batches. No flip or colour op here."""
    import tensorflow as tf

    from ltpll.models.augment import CROP_RATIO

    files_t = tf.constant(files)
    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]], tf.float32)

    def crop(data, shape):
        begin, extent, _ = tf.image.sample_distorted_bounding_box(
            shape, bounding_boxes=whole, min_object_covered=0.0, aspect_ratio_range=CROP_RATIO,
            area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True)
        window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
        image = tf.io.decode_and_crop_jpeg(data, window, channels=3,
                                           dct_method="INTEGER_ACCURATE")
        image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    def load(row):
        data = tf.io.read_file(tf.gather(files_t, row))
        shape = tf.image.extract_jpeg_shape(data)
        return (crop(data, shape), crop(data, shape)), row

    rows = tf.random.experimental.stateless_shuffle(
        tf.range(len(files), dtype=tf.int32), seed=[seed, 0])
    return (tf.data.Dataset.from_tensor_slices(rows).map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def _plain_decode_dataset(files, size, batch_size, seed=0):
    """ltpll's streamed decode minus the antialiasing (and minus the DCT-scale switch, which
    never triggers for 500x375 photos at 224): read, ``decode_jpeg``, bilinear resize."""
    import tensorflow as tf

    files_t = tf.constant(files)

    def load(row):
        data = tf.io.read_file(tf.gather(files_t, row))
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        image = tf.image.resize(image, (size, size), method="bilinear", antialias=False)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), row

    rows = tf.random.experimental.stateless_shuffle(
        tf.range(len(files), dtype=tf.int32), seed=[seed, 0])
    return (tf.data.Dataset.from_tensor_slices(rows).map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def _stop_enqueuer(adapter):
    enqueuer = getattr(adapter, "enqueuer", None)
    if enqueuer is not None and enqueuer.is_running():
        enqueuer.stop()


def measure_pipelines(root: Path, args) -> list[dict]:
    """Rows of the input-pipeline table."""
    import keras
    import tensorflow as tf
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from ltpll.data.files import ImageFiles
    from ltpll.data.pipeline import StreamedBatches, stream_train_dataset
    from ltpll.models.augment import CROP_SCALE

    size, batch = args.image_size, args.batch_size
    files, labels = read_lists(root)
    needed = (args.warmup_batches + args.timed_batches) * batch
    if len(files) < needed:
        raise SystemExit(f"--images {len(files)} is too few for {needed} measured images")
    candidates = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    candidates[np.random.default_rng(0).random(candidates.shape) < 0.3] = 1.0
    images = ImageFiles(np.asarray(files, dtype=object), size, size)
    timer = Timer(args.warmup_batches, args.timed_batches)
    rows = []

    def add(key, what, rate, device_ops, note="", others=-1.0):
        others = timer.others if others == -1.0 else others
        rows.append({"key": key, "what": what, "rate": rate, "device_ops": device_ops,
                     "note": note, "others": others})
        shown = "     n/a" if rate is None else f"{rate:8.1f}"
        busy = "" if others is None else f" (others {100 * others:.0f}% CPU)"
        print(f"  {key:4s} {shown} images/s{busy}  {what} {note}", flush=True)

    def streamed():
        return stream_train_dataset(images, candidates, labels, batch, seed=0, epochs=1)

    print("compiling the on-device views (XLA)...", flush=True)
    views = _device_views()
    views_pinned = _device_views_without_crop()
    sample = tf.constant(images.decode(np.arange(batch)))
    started = time.perf_counter()
    views(sample)
    views(tf.cast(sample, tf.float32))  # image_dataset_from_directory yields float32
    views_pinned(sample, sample)
    print(f"  compiled in {time.perf_counter() - started:.0f} s", flush=True)

    def with_views(batch_):
        return _materialise((views(_first(batch_)),))

    def with_pinned_views(batch_):
        weak_crops, strong_crops = _first(batch_)
        return _materialise((views_pinned(weak_crops, strong_crops),))

    add("a", "ltpll `stream_train_dataset` (tf.data): read + decode + resize to 224",
        timer(streamed()), "-")
    add("a'", "as a without antialiasing: `decode_jpeg` + `tf.image.resize(antialias=False)` "
        "(the resize image_dataset_from_directory does)",
        timer(_plain_decode_dataset(files, size, batch)), "-")
    add("b", "a + both views on device (WeakAugment + StrongAugment, XLA)",
        timer(streamed(), with_views), "crop x2 + flip + jitter/gray + RandAugment/cutout")

    def directory():
        return keras.utils.image_dataset_from_directory(
            str(root / "train"), image_size=(size, size), batch_size=batch, shuffle=True,
            seed=0, verbose=False)

    add("c1", "`keras.utils.image_dataset_from_directory`, image_size (224, 224): decode + "
        "resize", timer(directory()), "-")
    add("c2", "c1 + both views on device (as b)", timer(directory(), with_views),
        "crop x2 + flip + jitter/gray + RandAugment/cutout")

    lo, hi = CROP_SCALE
    add("d1", f"pipeline crop: read once, 2 x (`sample_distorted_bounding_box` scale ({lo:g}, "
        f"{hi:g}) + `decode_and_crop_jpeg` + resize to 224)",
        timer(_pipeline_crop_dataset(files, size, batch, CROP_SCALE)),
        "none (crops only)")
    add("d1'", "d1 with scale (0.08, 1) (torchvision's default)",
        timer(_pipeline_crop_dataset(files, size, batch, (0.08, 1.0))), "none (crops only)")
    add("d2", "d1 + the rest of both views on device (crop pinned to the whole frame)",
        timer(_pipeline_crop_dataset(files, size, batch, CROP_SCALE), with_pinned_views),
        "flip + jitter/gray + RandAugment/cutout (identity resample kept)")

    # Device work alone: the views of one decoded batch, over and over (no input pipeline).
    def repeat(batch_, fn):
        while True:
            yield (fn(batch_),)

    add("v1", "both views on device alone (decoded batch reused, no input)",
        timer(repeat(sample, views)), "as b")
    add("v2", "the d2 device part alone (pre-cropped batch reused, no input)",
        timer(repeat(sample, lambda x: views_pinned(x, x))), "as d2")

    for workers in (2, 4):
        dataset = StreamedBatches(images, candidates, labels, batch, seed=0, workers=workers)
        adapter = PyDatasetAdapter(dataset, shuffle=False)
        try:
            rate = timer(adapter.get_numpy_iterator())
        finally:
            _stop_enqueuer(adapter)
        add(f"e{workers // 2}", f"ltpll `StreamedBatches` (Pillow, keras PyDataset, "
            f"workers={workers} threads): decode + resize", rate, "-")

    for row in measure_grain(root, args):
        add(**row)
    return rows


# --- grain, in a separate Python (not a dependency) ------------------------------------------


def grain_main(args):
    """``--grain-worker``: images/s of grain's thread reader decoding with ltpll's Pillow code."""
    import grain

    from ltpll.data.files import decode_file

    files, _ = read_lists(Path(args.grain_worker))
    size, batch = args.image_size, args.batch_size
    timer = Timer(args.warmup_batches, args.timed_batches)
    results = {"version": getattr(grain, "__version__", "?")}
    for threads in (2, 4):
        dataset = (grain.MapDataset.source(files).shuffle(seed=0)
                   .map(lambda file: decode_file(file, size, size))
                   .to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                      prefetch_buffer_size=2 * batch))
                   .batch(batch, drop_remainder=True))
        results[str(threads)] = timer(dataset)
        results[f"{threads}-others"] = timer.others
    print("GRAIN-RESULT " + json.dumps(results))


def measure_grain(root: Path, args) -> list[dict]:
    python = args.grain_python
    if python is None:
        try:
            import grain  # noqa: F401

            python = sys.executable
        except ImportError:
            python = DEFAULT_GRAIN_PYTHON if os.path.exists(DEFAULT_GRAIN_PYTHON) else None
    if python is None:
        return [{"key": "f", "what": "grain", "rate": None, "device_ops": "-",
                 "note": "grain not measured: not installed (see --grain-python)",
                 "others": None}]
    command = [python, str(Path(__file__).resolve()), "--grain-worker", str(root),
               "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
               "--warmup-batches", str(args.warmup_batches),
               "--timed-batches", str(args.timed_batches)]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("GRAIN-RESULT ")), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return [{"key": "f", "what": "grain", "rate": None, "device_ops": "-",
                 "note": f"grain not measured: {tail[0][:160]}", "others": None}]
    result = json.loads(line[len("GRAIN-RESULT "):])
    return [{"key": f"f{i + 1}", "what": f"grain {result['version']} `MapDataset` -> "
             f"`to_iter_dataset` ({threads} threads), decode with ltpll's Pillow `decode_file`"
             " (separate venv)", "rate": result[str(threads)], "device_ops": "-",
             "note": "", "others": result[f"{threads}-others"]}
            for i, threads in enumerate((2, 4))]


# ---------------------------------------------------------------------------------------------
# 3. Peak memory of real training runs
# ---------------------------------------------------------------------------------------------


#: Runs ``ltpll train`` exactly as the ``ltpll`` console script does (``ltpll.cli.main:main``),
#: with one daemon thread that samples the process's RSS every 50 ms and files each sample
#: under the phase the main thread is in: inside ``channel_statistics`` (the normalisation
#: statistics computed before training) or not. Written as JSON at exit.
RSS_SAMPLER = r"""
import atexit, json, os, sys, threading, time
page = os.sysconf("SC_PAGE_SIZE")
peaks = {"statistics": 0, "other": 0, "samples": 0}
main_id = threading.get_ident()

def phase():
    frame = sys._current_frames().get(main_id)
    while frame is not None:
        if frame.f_code.co_name == "channel_statistics":
            return "statistics"
        frame = frame.f_back
    return "other"

def sample():
    while True:
        with open("/proc/self/statm") as handle:
            rss = int(handle.read().split()[1]) * page
        where = phase()
        peaks[where] = max(peaks[where], rss)
        peaks["samples"] += 1
        time.sleep(0.05)

def dump():
    with open(os.environ["BENCH_SCALE_RSS_FILE"], "w") as handle:
        json.dump(peaks, handle)

atexit.register(dump)
threading.Thread(target=sample, daemon=True).start()
from ltpll.cli.main import main
sys.argv[0] = "ltpll"
sys.exit(main())
"""


def train_command(root: Path, train_list: str, mode: str, args, output: Path) -> list[str]:
    return ["ltpll", "train", "--dataset", str(root), "--train-list", train_list,
            "--test-list", "test.txt", f"--{mode}", "--image-size", str(args.image_size),
            "--backbone", "tiny", "--epochs", "1", "--batch-size", "32", "--eval-every", "1",
            "--seed", "0", "--output", str(output)]


def train_run(root: Path, train_list: str, mode: str, args, scratch_base: Path,
              log_dir: Path) -> dict:
    """One ``ltpll train`` in a fresh process: peak RSS (MiB; ``ru_maxrss`` of the child from
    ``os.wait4``, and the sampled peaks per phase), wall seconds, exit status."""
    name = f"{mode}-{train_list.removesuffix('.txt')}"
    scratch = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch_base))
    command = train_command(root, train_list, mode, args, scratch / "run")
    rss_file = scratch / "rss.json"
    env = dict(os.environ, XDG_CACHE_HOME=str(scratch / "cache"), KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2", BENCH_SCALE_RSS_FILE=str(rss_file))
    log = log_dir / f"train-{name}.log"
    with open(log, "w") as handle, Contention() as contention:
        handle.write("$ " + shlex.join(command) + "\n")
        handle.flush()
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", RSS_SAMPLER, *command[1:]], env=env,
                                   stdout=handle, stderr=subprocess.STDOUT, cwd=scratch)
        try:
            _, status, usage = _wait4(process, timeout=args.train_timeout)
        except TimeoutError:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            status = None
        seconds = time.perf_counter() - started
    process.returncode = -9 if status is None else os.waitstatus_to_exitcode(status)
    try:
        phases = json.loads(rss_file.read_text())
    except (OSError, ValueError):
        phases = {}
    shutil.rmtree(scratch, ignore_errors=True)
    return {"name": name, "mode": mode, "list": train_list, "rss_mib": usage.ru_maxrss / 1024,
            "statistics_mib": phases.get("statistics", 0) / 2**20 or None,
            "other_mib": phases.get("other", 0) / 2**20 or None,
            "seconds": seconds, "returncode": process.returncode, "log": str(log),
            "others": contention.others, "command": shlex.join(command)}


def _wait4(process, timeout):
    """``os.wait4`` of one child (its own peak RSS, not the maximum over all children)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            return pid, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)


def _available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def expected_peak_bytes(num_images: int, mode: str, size: int) -> int:
    """A generous guess at a run's peak: the float64 copies ``channel_statistics`` makes of
    its sample (every image in memory, at most STATISTICS_SAMPLE streamed), the decoded
    images in memory, and 1.5 GiB of TensorFlow."""
    from ltpll.data.prepare import STATISTICS_SAMPLE

    sample = num_images if mode == "in-memory" else min(num_images, STATISTICS_SAMPLE)
    decoded = num_images * size * size * 3 if mode == "in-memory" else 0
    return 2 * 8 * sample * size * size * 3 + decoded + int(1.5 * 2**30)


def measure_training(root: Path, args, log_dir: Path) -> list[dict]:
    from ltpll.data.sources import default_cache_dir

    scratch_base = default_cache_dir() / "bench-scale" / "scratch"
    scratch_base.mkdir(parents=True, exist_ok=True)
    small = f"train-{args.small_images}.txt"
    results = []
    for mode in ("stream", "in-memory"):
        for train_list, count in ((small, args.small_images), ("train.txt", args.images)):
            need, free = expected_peak_bytes(count, mode, args.image_size), _available_bytes()
            if free is not None and need > free - 2**30:
                print(f"  ltpll train --{mode} on {train_list}: skipped, it may need "
                      f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB are available",
                      flush=True)
                results.append({"mode": mode, "list": train_list, "skipped":
                                f"skipped: may need {need / 2**30:.1f} GiB, "
                                f"{free / 2**30:.1f} GiB available"})
                continue
            print(f"  ltpll train --{mode} on {train_list} ...", flush=True)
            result = train_run(root, train_list, mode, args, scratch_base, log_dir)
            status = "ok" if result["returncode"] == 0 else f"exit {result['returncode']}"
            print(f"    peak RSS {result['rss_mib']:.0f} MiB (outside channel_statistics "
                  f"{result['other_mib'] or 0:.0f} MiB), {result['seconds']:.0f} s, {status}, "
                  f"others {100 * result['others']:.0f}% CPU", flush=True)
            results.append(result)
    return results


# ---------------------------------------------------------------------------------------------
# 4. ResNet-50
# ---------------------------------------------------------------------------------------------


def measure_resnet50(args, log_dir: Path) -> dict:
    command = [str(Path(sys.executable).with_name("ltpll")), "bench-step", "--backbone",
               "resnet50", "--image-size", str(args.image_size), "--batch-size",
               str(args.resnet_batch_size), "--steps", str(args.resnet_steps), "--warmup", "1",
               "--jit" if args.resnet_jit else "--no-jit", "--json"]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    started = time.perf_counter()
    try:
        with Contention() as contention:
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=args.train_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.train_timeout} s", "command": shlex.join(command)}
    seconds = time.perf_counter() - started
    (log_dir / "bench-step-resnet50.log").write_text(
        "$ " + shlex.join(command) + "\n" + done.stdout + "\n" + done.stderr)
    text = done.stdout
    if done.returncode != 0 or "{" not in text:
        tail = (done.stderr or text).strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0][:200], "command": shlex.join(command)}
    result = json.loads(text[text.index("{"):])
    result.update(command=shlex.join(command), seconds=seconds, others=contention.others)
    return result


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def machine_lines(args) -> list[str]:
    import keras
    import PIL

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import tensorflow as tf

        tf_version = tf.__version__
    except ImportError:
        tf_version = "not installed"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}` "
        f"(KERAS_BACKEND={keras.backend.backend()})",
        f"- machine: {os.cpu_count()} CPUs ({model}), {memory:.0f} GiB RAM, "
        f"{platform.system()} {platform.machine()}, no GPU used",
        f"- versions: Python {platform.python_version()}, TensorFlow {tf_version}, "
        f"Keras {keras.__version__}, Pillow {PIL.__version__}",
    ]


def dataset_table(root: Path, info: dict) -> list[str]:
    how = "reused (generated earlier in" if info["reused"] else "generated in"
    return [
        "| images (train + test) | layout | mean JPEG size | total | generation |",
        "|---|---|---|---|---|",
        f"| {info['train']:,} + {info['test']:,} | ImageNet-LT lists, {NUM_CLASSES} classes "
        f"(train {min(info['class_counts'])}..{max(info['class_counts'])} per class), "
        f"500x375 / 375x500 q{JPEG_QUALITY} | {info['mean_kb']:.0f} KB | "
        f"{info['bytes'] / 2**20:.0f} MiB | {how} {info['seconds']:.1f} s, "
        f"{info['workers']} threads{')' if info['reused'] else ''} |",
        "",
        f"Data: `{root}`",
    ]


def pipeline_table(rows, args) -> list[str]:
    lines = [f"Batch {args.batch_size}, {args.image_size} px; each row a new pipeline, "
             f"{args.warmup_batches} batches of warm-up then {args.timed_batches} timed "
             f"({args.timed_batches * args.batch_size} images). images/s = source images "
             "(rows with both views make 2 x 224-px views of each).", "",
             "| | pipeline | augmentation ops included | images/s | other processes' CPU |",
             "|---|---|---|---:|---:|"]
    for row in rows:
        rate = "n/a" if row["rate"] is None else f"{row['rate']:,.0f}"
        what = row["what"] + (f" — {row['note']}" if row["note"] else "")
        others = "-" if row.get("others") is None else f"{100 * row['others']:.0f}%"
        lines.append(f"| {row['key']} | {what} | {row['device_ops']} | {rate} | {others} |")
    rate = {row["key"]: row["rate"] for row in rows}

    def ratio(a, b):
        return f"{rate[a] / rate[b]:.2f}x" if rate.get(a) and rate.get(b) else "n/a"

    lines += [
        "",
        f"- streamed tf.data vs `image_dataset_from_directory`: decode only a/c1 = "
        f"{ratio('a', 'c1')}; with both views b/c2 = {ratio('b', 'c2')}",
        f"- random-resized crop in the pipeline vs on device, everything else equal (d2/b): "
        f"{ratio('d2', 'b')}; crops-only pipeline d1/a = {ratio('d1', 'a')} "
        "(d1 and a include no colour/RandAugment op, b and d2 include all of them)",
        f"- Pillow `StreamedBatches` vs tf.data (e2/a, 4 threads): {ratio('e2', 'a')}",
    ]
    return lines


def training_table(results, args) -> list[str]:
    by = {(r["mode"], r["list"]): r for r in results}
    small = f"train-{args.small_images}.txt"
    example = shlex.join(train_command(Path("ROOT"), "train.txt", "stream", args, Path("RUN")))
    lines = [f"`{example}` (and `--in-memory`, and `--train-list {small}`), each a fresh process "
             "with an empty XDG_CACHE_HOME (no decode cache). **Peak RSS** = the child's "
             "`ru_maxrss` (`os.wait4`, exact). The process runs `ltpll.cli.main:main` as the "
             "console script does, plus a thread sampling its RSS every 50 ms by phase: "
             "inside `ltpll.data.prepare.channel_statistics` (normalisation statistics, before "
             "training) or anywhere else (loading, model build, training, test).", "",
             f"| input | measure | {args.small_images:,} train images | {args.images:,} train "
             "images | ratio |", "|---|---|---:|---:|---:|"]

    def mib(value):
        return "-" if not value else f"{value:,.0f} MiB"

    def ratio(a, b):
        return f"{b / a:.2f}" if a and b else "-"

    for mode in ("stream", "in-memory"):
        a, b = by.get((mode, small)), by.get((mode, "train.txt"))
        if a is None or b is None:
            continue
        if "skipped" in a or "skipped" in b:
            lines.append(f"| `--{mode}` | peak RSS | {a.get('skipped') or mib(a['rss_mib'])} | "
                         f"{b.get('skipped') or mib(b['rss_mib'])} | - |")
            continue
        bad = [f"exit {r['returncode']} ({r['name']})" for r in (a, b) if r["returncode"]]
        flag = f" ({', '.join(bad)})" if bad else ""
        lines += [
            f"| `--{mode}` | **peak RSS (ru_maxrss)**{flag} | **{mib(a['rss_mib'])}** | "
            f"**{mib(b['rss_mib'])}** | **{ratio(a['rss_mib'], b['rss_mib'])}** |",
            f"| | sampled peak inside `channel_statistics` | {mib(a['statistics_mib'])} | "
            f"{mib(b['statistics_mib'])} | {ratio(a['statistics_mib'], b['statistics_mib'])} |",
            f"| | sampled peak outside it (load, build, train, test) | {mib(a['other_mib'])} | "
            f"{mib(b['other_mib'])} | {ratio(a['other_mib'], b['other_mib'])} |",
            f"| | wall time (other processes' CPU) | {a['seconds']:.0f} s "
            f"({100 * a['others']:.0f}%) | {b['seconds']:.0f} s ({100 * b['others']:.0f}%) | |",
        ]
    decoded = (args.images - args.small_images) * args.image_size ** 2 * 3 / 2**20
    from ltpll.data.prepare import STATISTICS_SAMPLE

    lines += ["", f"For scale: the decoded {args.image_size}-px uint8 pixels of the extra "
              f"{args.images - args.small_images:,} images are {decoded:,.0f} MiB (what an "
              "in-memory run has to add); `channel_statistics` works 64 images at a time, on "
              f"every image in memory and on a sample of {STATISTICS_SAMPLE:,} when streamed."]
    return lines


def resnet_table(result, args) -> list[str]:
    if "error" in result:
        return [f"not measured: {result['error']}", "", f"`{result['command']}`"]
    full = result["full"]["views_per_s"]
    return [
        f"`{result['command']}` ({result['seconds']:.0f} s with compilation; other processes "
        f"took {100 * result['others']:.0f}% of the CPU meanwhile)", "",
        f"| step (ResNet-50, {result['image_size']} px, batch {result['batch_size']}, "
        f"{result['precision']}, {'XLA' if result['jit_compile'] else 'no XLA'}, CPU) | "
        "ms/step | views/s | "
        "training images/s |",
        "|---|---:|---:|---:|",
        f"| full CORR + RECORDS step (2 views, on-device augmentation) | "
        f"{result['full']['median']:,.0f} | {full:.1f} | {full / 2:.1f} |",
        f"| bare backbone (forward + backward, {2 * result['batch_size']} prepared views) | "
        f"{result['bare']['median']:,.0f} | {result['bare']['views_per_s']:.1f} | "
        f"{result['bare']['views_per_s'] / 2:.1f} |",
        "",
        f"Step-time ratio (full / bare): {result['overhead_ratio']:.2f}. One epoch of "
        f"ImageNet-LT's 115,846 images at this rate: {115846 / (full / 2) / 3600:.1f} h.",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="training images to generate")
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--small-images", type=int, default=1000,
                        help="training images of the small run of the memory check")
    parser.add_argument("--output", default="runs/bench-scale-cpu")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--timed-batches", type=int, default=8)
    parser.add_argument("--resnet-batch-size", type=int, default=16)
    parser.add_argument("--resnet-steps", type=int, default=3)
    parser.add_argument("--resnet-jit", action="store_true",
                        help="XLA-compile the ResNet-50 steps (slow to compile on a CPU)")
    parser.add_argument("--train-timeout", type=int, default=900,
                        help="seconds before a training subprocess is killed")
    parser.add_argument("--grain-python", default=None,
                        help="a Python with grain installed (default: this one if it has "
                             f"grain, else {DEFAULT_GRAIN_PYTHON} if it exists)")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-resnet50", action="store_true")
    parser.add_argument("--grain-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grain_worker:
        return grain_main(args)
    if not 0 < args.small_images < args.images:
        parser.error("--small-images must be between 0 and --images")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()

    from ltpll.data.sources import default_cache_dir

    output = Path(args.output)
    log_dir = output / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    root = default_cache_dir() / "bench-scale" / f"imagenet-like-{args.images}-{args.test_images}"
    print(f"data: {root}", flush=True)
    info = generate_dataset(root, args.images, args.test_images, args.small_images)
    print(f"  {'reused; generated earlier in' if info['reused'] else 'generated in'} "
          f"{info['seconds']:.1f} s ({info['mean_kb']:.0f} KB a JPEG)", flush=True)

    report = ["# bench-scale-cpu", ""] + machine_lines(args)
    report += ["", "## Data set", ""] + dataset_table(root, info)
    if not args.skip_pipeline:
        print("input pipelines:", flush=True)
        rows = measure_pipelines(root, args)
        report += ["", "## Input pipeline (images/s on this CPU)", ""]
        report += pipeline_table(rows, args)
    if not args.skip_train:
        print("peak memory of training runs:", flush=True)
        results = measure_training(root, args, log_dir)
        report += ["", "## Peak RSS of `ltpll train`: streamed vs in memory", ""]
        report += training_table(results, args)
    if not args.skip_resnet50:
        print("ResNet-50 training step (slow on a CPU)...", flush=True)
        report += ["", "## ResNet-50 training step at 224 px", ""]
        report += resnet_table(measure_resnet50(args, log_dir), args)
    report += ["", f"Total benchmark time: {(time.perf_counter() - started) / 60:.1f} min."]
    text = "\n".join(report) + "\n"
    (output / "results.md").write_text(text)
    print()
    print(text)
    print(f"written to {output / 'results.md'}")


if __name__ == "__main__":
    main()
