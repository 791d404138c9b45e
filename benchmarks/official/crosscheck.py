"""Numerical cross-check of ltpll's CORR + RECORDS step against the RECORDS authors' code.

``make crosscheck-official OFFICIAL=path/to/RECORDS-LTPLL``. The authors' CIFAR ResNet-18 (their
``models/resnet.py``) is initialised by torch; its weights are copied into ltpll's ``resnet18``
backbone and Dense head (:mod:`benchmarks.official.weights`); both then take the same SGD steps
(lr 0.01, momentum 0.9, weight decay 1e-3 unless told otherwise) on the same batches of real
CIFAR-10 images with the same candidate sets, the authors' ``CORR_loss_RECORDS`` on one side
(:mod:`benchmarks.official.torch_side`, run by a Python that has torch) and ltpll's
:class:`~ltpll.models.pll_model.PLLModel` with CORR and RECORDS on the other, float32 on the CPU,
TensorFlow's plain graph (no XLA, no mixed precision). It prints the largest absolute difference
of the loss, the head's gradients, the confidence rows the step wrote, the RECORDS feature mean
and the weights, at the first and the last step.

Why the views are not augmented: the two sides draw random augmentations differently, so both
views are the plain normalised images on both sides. ltpll's PLLModel takes its augmentation
layers as arguments; the harness passes :class:`Unaugmented` (uint8 to [0, 1], nothing else),
and the model itself normalises, runs both views through the backbone in one batch, computes
the loss, moves the feature mean and writes the table, as in training.

The columns. TensorFlow's ``"same"`` padding of a 3x3 stride-2 convolution on an even input
pads one row and column at the bottom and right only, PyTorch's ``padding=1`` one on every side,
so the two networks sample the downsampling convolutions one pixel apart. ``as is`` compares
with the authors' network untouched (the real difference); ``TF padding`` with their network
padded the TensorFlow way, which isolates everything else (the loss, the update, RECORDS, SGD).
``official fp32 vs fp64`` is their own float32 run against float64: how far float32 rounding
alone carries; from a fresh network with BatchNorm on 16-image batches it grows to O(0.1) within
20 steps, so differences after many steps are read against it, not against 1e-4. ``both fp64``
runs ltpll's backbone, head and SGD in float64 (its loss, table and feature mean stay float32,
as in every ltpll run) against their float64 run.

The step on the ltpll side is Keras' own TensorFlow ``train_step`` (forward with
``training=True``, ``compute_loss``, gradient, ``optimizer.apply``), written out so the head's
gradients can be read; the loss row is the CORR loss alone (``method.loss`` on the rows the step
read), since the loss ``compute_loss`` returns includes the coupled L2 term.
"""

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from benchmarks.official.checkout import CheckoutError, check_checkout  # noqa: E402
from benchmarks.official.weights import torch_to_keras  # noqa: E402

# The authors' CIFAR-10 normalisation (utils/cifar10.py), used by both sides.
OFFICIAL_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
OFFICIAL_CIFAR10_STD = (0.247, 0.243, 0.261)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=False, default=os.environ.get("OFFICIAL"),
                        help="the authors' RECORDS-LTPLL checkout")
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "python3"),
                        help="a Python with torch, for the authors' side")
    parser.add_argument("--dataset", default=os.path.join(REPO, "..", "shared", "data",
                                                          "cifar10-jpg.tar.gz"),
                        help="CIFAR-10 as a .tar.gz image folder (train/<class>/<image>)")
    parser.add_argument("--samples", type=int, default=64,
                        help="training images (the first of each class, in name order)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--partial-rate", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--records-momentum", type=float, default=0.9)
    parser.add_argument("--no-update", action="store_true",
                        help="hold the confidence table still (the authors' first epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ltpll-dtypes", default="float32,float64",
                        help="ltpll runs to make: float32 (the real comparison) and float64 "
                             "(against the authors' code in float64, free of float32 rounding)")
    parser.add_argument("--keep", default=None,
                        help="keep the exchanged .npz files in this directory; a later run with "
                             "the same inputs and directory reuses the official side's")
    return parser.parse_args(argv)


# --- inputs ----------------------------------------------------------------------------------

def load_images(tarball, samples, num_classes=10):
    """``(uint8 [N, H, W, 3], labels [N])``: the first ``samples / C`` training images of each
    class by file name (the last classes get the remainder), decoded by TensorFlow."""
    import tensorflow as tf

    if not os.path.isfile(tarball):
        raise SystemExit(f"crosscheck: no CIFAR-10 tarball at {tarball} (--dataset)")
    per_class = [samples // num_classes + (c < samples % num_classes) for c in range(num_classes)]
    members = {name: [] for name in CLASSES}
    with tarfile.open(tarball) as archive:
        for member in archive:
            parts = member.name.lstrip("./").split("/")
            if member.isfile() and len(parts) == 3 and parts[0] == "train" and parts[1] in members:
                members[parts[1]].append((parts[2], archive.extractfile(member).read()))
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        chosen = sorted(members[name])[:per_class[label]]
        if len(chosen) < per_class[label]:
            raise SystemExit(f"crosscheck: {tarball} has too few train/{name} images")
        images += [tf.io.decode_jpeg(data, channels=3).numpy() for _, data in chosen]
        labels += [label] * len(chosen)
    return np.stack(images), np.asarray(labels)


def batch_order(samples, batch_size, steps, seed):
    """``[steps, batch_size]`` sample indices: a fresh seeded permutation each epoch, so rows of
    the confidence table are revisited after they were updated."""
    rng = np.random.default_rng(seed)
    flat = []
    while len(flat) < steps * batch_size:
        flat += list(rng.permutation(samples)[: samples - samples % batch_size])
    return np.asarray(flat[: steps * batch_size], dtype=np.int32).reshape(steps, batch_size)


# --- the ltpll side --------------------------------------------------------------------------

def unaugmented_layer():
    """The augmentation-off view layer: uint8 (0..255) to float32 in [0, 1], nothing else."""
    import keras

    class Unaugmented(keras.layers.Layer):
        def call(self, images):
            return keras.ops.cast(images, "float32") / 255.0

    return Unaugmented


def build_ltpll_model(num_samples, candidates, args, dtype="float32"):
    """The PLLModel ``ltpll train --backbone resnet18 --method corr --records`` builds
    (:func:`ltpll.assembly.build_model`), with the augmentation switched off and SGD
    compiled for TensorFlow's plain graph. ``dtype`` ``"float64"``: the backbone, head and
    optimizer in float64 (the model still computes its loss, table and RECORDS mean in float32,
    as it always does)."""
    from ltpll import components
    from ltpll.assembly import dtype_policy

    context = components.BuildContext(num_classes=candidates.shape[1], image_size=32,
                                      image_shape=(32, 32, 3), seed=args.seed, epochs=1)
    # Built outside the policy: ltpll keeps the feature mean in float32 under every policy
    # (its update adds a float32 batch mean), as build_model does under mixed precision.
    rebalancer = components.build(
        "rebalancer", {"name": "records", "momentum": args.records_momentum}, context)
    with dtype_policy(dtype):
        return _build_ltpll_model(num_samples, candidates, args, context, rebalancer)


def _build_ltpll_model(num_samples, candidates, args, context, rebalancer):
    from ltpll import components
    from ltpll.models.pll_model import PLLModel
    from ltpll.optimizers import sgd

    unaugmented = unaugmented_layer()
    model = PLLModel(
        components.build("backbone", "resnet18", context),
        num_classes=candidates.shape[1],
        num_samples=num_samples,
        image_shape=(32, 32, 3),
        method="corr",
        rebalancer=rebalancer,
        mean=OFFICIAL_CIFAR10_MEAN,
        std=OFFICIAL_CIFAR10_STD,
        weight_decay=args.weight_decay,
        seed=args.seed,
        weak_augment=unaugmented(name="weak_augment"),
        strong_augment=unaugmented(name="strong_augment"),
    )
    model.set_candidates(candidates)
    model.compile(optimizer=sgd(args.lr, args.momentum), jit_compile=False)
    model.update_enabled.assign(0.0 if args.no_update else 1.0)
    return model


def copy_official_weights(model, torch_state):
    """Loads the authors' initial weights into ``model``; every weighted layer must get some."""
    layers = torch_to_keras(torch_state)
    weighted = {layer.name for layer in model.backbone.layers if layer.weights}
    missing = weighted - set(layers)
    extra = set(layers) - weighted - {"head"}
    if missing or extra:
        raise SystemExit(f"crosscheck: layers do not match: ltpll only {sorted(missing)}, "
                         f"official only {sorted(extra)}")
    for name, arrays in layers.items():
        target = model.head if name == "head" else model.backbone.get_layer(name)
        target.set_weights(arrays)


def run_ltpll(model, images, candidates, order):
    """Keras' TensorFlow train_step written out; what each step gives, as torch_side records."""
    import tensorflow as tf
    from keras import ops

    tf.get_logger().setLevel("ERROR")  # AutoGraph's notes on methods it runs as they are
    trainable = model.trainable_weights
    kernel_at = next(i for i, w in enumerate(trainable) if w is model.head.kernel)
    bias_at = next(i for i, w in enumerate(trainable) if w is model.head.bias)

    @tf.function(jit_compile=False)
    def step(x, batch_candidates, index):
        read = ops.take(model.confidence, index, axis=0)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(
                x, {"candidates": batch_candidates, "index": index}, y_pred, training=True)
        grads = tape.gradient(loss, trainable)
        model.optimizer.apply(grads, trainable)
        corr = model.method.loss(y_pred["logits_w"], y_pred["logits_s"], read, batch_candidates)
        return corr, grads[kernel_at], grads[bias_at]

    record = {"loss": [], "grad_kernel": [], "grad_bias": [], "rows": [], "feature_mean": []}
    for batch in order:
        corr, grad_kernel, grad_bias = step(
            tf.constant(images[batch]), tf.constant(candidates[batch]), tf.constant(batch))
        record["loss"].append(float(corr))
        record["grad_kernel"].append(grad_kernel.numpy())
        record["grad_bias"].append(grad_bias.numpy())
        record["rows"].append(ops.convert_to_numpy(model.confidence)[batch])
        record["feature_mean"].append(ops.convert_to_numpy(model.rebalancer.feature_mean))
    return {key: np.asarray(values) for key, values in record.items()}


def final_ltpll_weights(model):
    """``{layer: [arrays]}`` after the last step, in Keras' order."""
    named = {layer.name: [np.asarray(w) for w in layer.get_weights()]
             for layer in model.backbone.layers if layer.weights}
    named["head"] = [np.asarray(w) for w in model.head.get_weights()]
    return named


# --- comparison ------------------------------------------------------------------------------

def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def weight_differences(ours, official):
    """Largest absolute differences after the last step: trainable weights, BN moving means and
    moving variances (the latter also relative)."""
    trainable, means, variances, relative = 0.0, 0.0, 0.0, 0.0
    for name, theirs in official.items():
        mine = ours[name]
        if name.endswith("_bn"):
            trainable = max(trainable, max_abs(mine[0], theirs[0]), max_abs(mine[1], theirs[1]))
            means = max(means, max_abs(mine[2], theirs[2]))
            variances = max(variances, max_abs(mine[3], theirs[3]))
            relative = max(relative, float(np.max(np.abs(mine[3] / theirs[3] - 1.0))))
        else:
            trainable = max(trainable, *(max_abs(m, t) for m, t in zip(mine, theirs)))
    return trainable, means, variances, relative


# Columns: (title, left side, right side). "ltpll" is this side; the others are torch_side's
# variants. The last column is the noise floor: the authors' float32 run against float64.
COLUMNS = (("as is", "ltpll", "asis"), ("TF padding", "ltpll", "tfpad"),
           ("official fp32 vs fp64", "tfpad", "tfpad64"), ("both fp64", "ltpll64", "tfpad64"))
QUANTITIES = (("CORR loss", "loss"), ("head kernel gradient", "grad_kernel"),
              ("head bias gradient", "grad_bias"), ("confidence rows written", "rows"),
              ("RECORDS feature mean F", "feature_mean"))


def official_records(official):
    """``{variant: {quantity: array}}`` of torch_side's output, in Keras' layout, plus each
    variant's final ``{layer: [arrays]}`` under ``"final"``."""
    records = {}
    for variant in {right for _, _, right in COLUMNS} | {left for _, left, _ in COLUMNS}:
        if variant.startswith("ltpll"):
            continue
        record = {key: official[f"{variant}.{key}"] for _, key in QUANTITIES}
        record["grad_kernel"] = record["grad_kernel"].transpose(0, 2, 1)  # [out, in] -> [in, out]
        prefix = f"{variant}.final."
        record["final"] = torch_to_keras({name[len(prefix):]: value for name, value in
                                          official.items() if name.startswith(prefix)})
        records[variant] = record
    return records


def table(records, steps):
    """Markdown rows: each quantity's scale, then its largest absolute difference at step 1 and
    at the last step for each of :data:`COLUMNS`; then the weights after the last step."""
    last = steps - 1
    columns = [c for c in COLUMNS if c[1] in records and c[2] in records]
    head = " | ".join(f"{title}, step 1 | {title}, step {steps}" for title, _, _ in columns)
    lines = [f"| quantity | scale | {head} |", "|" + " --- |" * (2 + 2 * len(columns))]
    for label, key in QUANTITIES:
        cells = []
        for _, left, right in columns:
            a, b = records[left][key], records[right][key]
            cells += [max_abs(a[0], b[0]), max_abs(a[last], b[last])]
        scale = float(np.max(np.abs(records["tfpad"][key])))
        lines.append(f"| {label} | {scale:.3g} | " + " | ".join(f"{c:.1e}" for c in cells) + " |")
    finals = [weight_differences(records[left]["final"], records[right]["final"])
              for _, left, right in columns]
    for i, label in enumerate(("trainable weights", "BN moving mean", "BN moving variance",
                               "BN moving variance (relative)")):
        cells = " | ".join(f" | {final[i]:.1e}" for final in finals)
        lines.append(f"| {label}, after step {steps} | | {cells} |")
    return lines


def same_inputs(path, arrays):
    """Whether the ``.npz`` at ``path`` holds exactly ``arrays`` (a kept run to reuse)."""
    if not os.path.isfile(path):
        return False
    with np.load(path) as kept:
        return set(kept.files) == set(arrays) and all(
            np.array_equal(kept[key], np.asarray(value)) for key, value in arrays.items())


def load_kept(path):
    """An ltpll record saved by ``--keep``: the per-step arrays and ``final`` {layer: [arrays]}."""
    record, final = {}, {}
    with np.load(path) as kept:
        for key in kept.files:
            if key.startswith("final."):
                layer, index = key[len("final."):].rsplit(".", 1)
                final.setdefault(layer, {})[int(index)] = kept[key]
            else:
                record[key] = kept[key]
    record["final"] = {layer: [arrays[i] for i in sorted(arrays)] for layer, arrays in final.items()}
    return record


def run_official(torch_python, official_path, inputs, outputs, steps):
    """torch_side.py in the torch Python; its last lines of stderr if it fails."""
    print(f"official side: {torch_python} torch_side.py ({steps} steps x 3 variants)",
          file=sys.stderr)
    done = subprocess.run(
        [torch_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_side.py"),
         "--official", official_path, "--inputs", inputs, "--output", outputs],
        capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"crosscheck: the official side failed ({done.returncode}):\n{tail}")


def main(argv=None):
    args = parse_args(argv)
    try:
        official_path = check_checkout(args.official)
    except CheckoutError as error:
        raise SystemExit(f"crosscheck: {error}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("crosscheck: needs KERAS_BACKEND=tensorflow")
    from ltpll.data.candidates import uniform_candidates

    images, labels = load_images(args.dataset, args.samples)
    candidates = uniform_candidates(labels, 10, args.partial_rate, args.seed)
    order = batch_order(len(images), args.batch_size, args.steps, args.seed)
    workdir = args.keep or tempfile.mkdtemp(prefix="ltpll-crosscheck-")
    os.makedirs(workdir, exist_ok=True)
    inputs, outputs = os.path.join(workdir, "inputs.npz"), os.path.join(workdir, "official.npz")
    arrays = dict(images=images, candidates=candidates, order=order,
                  mean=np.asarray(OFFICIAL_CIFAR10_MEAN), std=np.asarray(OFFICIAL_CIFAR10_STD),
                  lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                  records_m=args.records_momentum, update=not args.no_update, seed=args.seed)
    reused = same_inputs(inputs, arrays) and os.path.isfile(outputs)
    if reused:
        print(f"official side: reusing {outputs} (same inputs)", file=sys.stderr)
    else:
        np.savez(inputs, **arrays)
        run_official(args.torch_python, official_path, inputs, outputs, args.steps)
    with np.load(outputs) as data:
        official = {key: data[key] for key in data.files}

    records = official_records(official)
    init = {k[5:]: v for k, v in official.items() if k.startswith("init.")}
    for dtype in args.ltpll_dtypes.split(","):
        name = {"float32": "ltpll", "float64": "ltpll64"}[dtype]
        print(f"ltpll side: TensorFlow graph, {dtype}, no XLA", file=sys.stderr)
        model = build_ltpll_model(len(images), candidates, args, dtype)
        copy_official_weights(model, init)
        records[name] = {**run_ltpll(model, images, candidates, order),
                         "final": final_ltpll_weights(model)}
    if reused:  # ltpll runs kept by an earlier call on the same inputs join the table
        for name in ("ltpll", "ltpll64"):
            kept = os.path.join(workdir, f"{name}.npz")
            if name not in records and os.path.isfile(kept):
                records[name] = load_kept(kept)
    lines = table(records, args.steps)
    print(f"\nltpll (CORR + RECORDS, resnet18) vs the authors' CORR_loss_RECORDS + ResNet_s: "
          f"{len(images)} CIFAR-10 images, batch {args.batch_size}, {args.steps} SGD steps "
          f"(lr {args.lr}, momentum {args.momentum}, wd {args.weight_decay}), q "
          f"{args.partial_rate}, updates {'off' if args.no_update else 'on'}; "
          "largest |ltpll - official|\n")
    print("\n".join(lines))
    print("\nas is: the authors' network untouched; TF padding: its 3x3 stride-2 convolutions "
          "padded as TensorFlow's 'same' (bottom/right only), as ltpll's are; official fp32 vs "
          "fp64: their own float32 run against float64, the rounding floor; both fp64: ltpll's "
          "backbone, head and SGD in float64 against theirs in float64.")
    if args.keep:
        for name in [n for n in ("ltpll", "ltpll64") if n in records]:
            record = records[name]
            np.savez(os.path.join(workdir, f"{name}.npz"),
                     **{k: v for k, v in record.items() if k != "final"},
                     **{f"final.{layer}.{i}": value for layer, values in record["final"].items()
                        for i, value in enumerate(values)})


if __name__ == "__main__":
    main()
