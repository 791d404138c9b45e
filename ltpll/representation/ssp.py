"""Self-supervised rotation pre-training (SSP) of a backbone, and loading its result.

Yang & Xu (NeurIPS 2020) pre-train the backbone on the *training images only* with RotNet's
pretext task (Gidaris et al., ICLR 2018): every image is shown rotated by 0, 90, 180 and 270
degrees and the network predicts which. No label is used, so the imbalance of the labels cannot
bias the representation; the long-tailed (here: partial-label) training then starts from it.

``pretrain`` is the job behind ``ltpll pretrain``. It writes a directory holding

* ``backbone.weights.h5``: the backbone's weights (``backbone.save_weights``; BatchNorm moving
  statistics included), without the 4-way rotation head, which is thrown away;
* ``pretrain.json``: what the weights were trained for and on (backbone, image size, the data
  config and the resulting per-class counts, normalisation statistics) and how the pretext task
  ended (rotation accuracy, loss, seconds).

``load_pretrained_backbone`` loads such a directory into a freshly built backbone after checking
that it was pretrained for the same backbone and image size (``ltpll train --init-from DIR``).

The training step lives in :class:`RotationPretrainer`'s ``call`` and ``compute_loss`` (as in
:class:`~ltpll.models.pll_model.PLLModel`), so Keras' stock per-backend ``train_step`` compiles
it on TensorFlow (XLA or graph) and JAX alike.
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np
from keras import ops

from ltpll import components
from ltpll.data.pipeline import train_batches
from ltpll.data.prepare import channel_statistics, prepare_data
from ltpll.environment import tensorflow_available, xla_is_faster
from ltpll.errors import LTPLLError
from ltpll.fileio import DirectoryNotMoved, atomic_directory, read_json, write_json
from ltpll.models.augment import WeakAugment
from ltpll.models.backbones import set_input_statistics
from ltpll.models.pll_model import CIFAR10_MEAN, CIFAR10_STD, coupled_l2, normalise

NUM_ROTATIONS = 4
PRETRAIN_FORMAT = "ltpll-pretrain"
PRETRAIN_VERSION = 1
# What a finished pretrain directory holds.
PRETRAIN_FILES = {
    "weights": "backbone.weights.h5",  # Keras requires the .weights.h5 suffix
    "summary": "pretrain.json",        # written last: its presence marks a finished result
}
# SGD settings of the pretext task (RotNet's CIFAR recipe: momentum 0.9, lr 0.1, wd 5e-4).
MOMENTUM = 0.9
COSINE_ALPHA = 1e-3  # the learning rate decays to lr * alpha, as in ltpll train


# ---------------------------------------------------------------------------------------------
# Rotations
# ---------------------------------------------------------------------------------------------


def rotate90(images, k):
    """Rotates every image of a ``[B, H, W, C]`` batch by ``k * 90`` degrees counter-clockwise.

    Same result as ``np.rot90(image, k, axes=(0, 1))`` per image, with ``keras.ops`` only (a
    transpose and a flip are cheap on every backend and compile under XLA and ``jax.jit``).

    Args:
        images: a batch of square images, any dtype (uint8 stays uint8).
        k: a Python int; only ``k % 4`` matters.
    """
    k = int(k) % NUM_ROTATIONS
    if k == 0:
        return images
    if k == 2:
        return ops.flip(ops.flip(images, axis=1), axis=2)
    transposed = ops.transpose(images, (0, 2, 1, 3))  # swaps H and W: a mirror on the diagonal
    # ...then mirroring top-bottom turns it 90 degrees counter-clockwise, left-right clockwise.
    return ops.flip(transposed, axis=1 if k == 1 else 2)


def rotation_batch(images):
    """The four rotations of every image, and which rotation each one is.

    Args:
        images: uint8 or float ``[B, H, W, 3]`` square images (a numpy array or a tensor).

    Returns:
        ``(rotated, labels)``: ``rotated`` is ``[4B, H, W, 3]`` of the input's dtype, the whole
        batch rotated by 0 degrees, then by 90, 180 and 270 degrees counter-clockwise; ``labels``
        is int32 ``[4B]``, ``k`` for the images rotated by ``k * 90`` degrees.

    Raises:
        LTPLLError: for a batch that is not ``[B, H, W, C]`` with ``H == W`` (a rotated
            non-square image would not fit in the batch).
    """
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise LTPLLError(f"expected an image batch [B, H, W, 3]; got shape {tuple(images.shape)}")
    if images.shape[1] != images.shape[2]:
        raise LTPLLError(
            f"rotation pre-training needs square images; these are "
            f"{images.shape[1]}x{images.shape[2]} (pass --image-size)"
        )
    rotated = ops.concatenate([rotate90(images, k) for k in range(NUM_ROTATIONS)], axis=0)
    labels = ops.repeat(ops.arange(NUM_ROTATIONS, dtype="int32"), ops.shape(images)[0])
    return rotated, labels


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class RotationPretrainer(keras.Model):
    """A backbone and a 4-way linear head trained to tell how each image was rotated.

    One training step, all inside the compiled function: augment the uint8 batch (weak view:
    random resized crop, flip, colour jitter, grayscale), normalise per channel, rotate each image
    the four ways, and take the cross-entropy of the head's logits against the rotation labels,
    plus coupled L2 weight decay. The four rotations of a batch go through the backbone as one
    batch of ``4B`` (BatchNorm sees them together, as in RotNet).

    ``call(images, training=False)`` (``predict`` / ``evaluate``) skips the augmentation; both
    modes return ``{"logits": [4B, 4] float32, "labels": [4B] int32}``. The metrics are ``acc``
    (rotation accuracy; the name ltpll's progress display shows) and ``ce`` (the cross-entropy
    without the weight-decay term that ``loss`` includes).

    Args:
        backbone: a built Keras model from normalised float images ``[B, H, H, 3]`` to features
            ``[B, D]`` (a registered backbone, :mod:`ltpll.models.backbones`).
        mean, std: per-channel normalisation applied after augmentation, in [0, 1] units (use
            :func:`ltpll.data.prepare.channel_statistics` of the training images, as ``ltpll train``
            does, so the backbone sees the inputs it will see later).
        weight_decay: coupled L2 coefficient (PyTorch SGD's ``weight_decay``).
        seed: seed of the augmentation.
        augment: a layer mapping a uint8 batch to float images in [0, 1]; default
            :class:`~ltpll.models.augment.WeakAugment`.

    Raises:
        LTPLLError: for non-square backbone inputs or a negative weight decay.
    """

    def __init__(self, backbone, mean=CIFAR10_MEAN, std=CIFAR10_STD, weight_decay=0.0, seed=None,
                 augment=None, **kwargs):
        super().__init__(**kwargs)
        image_shape = tuple(backbone.input_shape[1:])
        if len(image_shape) != 3 or image_shape[0] != image_shape[1]:
            raise LTPLLError(
                f"rotation pre-training needs a backbone for square images; this one takes "
                f"{image_shape}"
            )
        if weight_decay < 0:
            raise LTPLLError(f"--weight-decay must be >= 0; received {weight_decay}")
        self.image_shape = image_shape
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.weight_decay = float(weight_decay)
        self.seed = seed

        self.backbone = backbone
        # A pretrained network's own preprocessing undoes this normalisation first.
        set_input_statistics(backbone, self.mean, self.std)
        self.head = keras.layers.Dense(NUM_ROTATIONS, name="rotation_head")
        self.augment = augment or WeakAugment(seed=seed, name="weak_augment")
        self.rotation_accuracy = keras.metrics.SparseCategoricalAccuracy(name="acc")
        self.cross_entropy = keras.metrics.Mean(name="ce")
        self.build((None, *self.image_shape))

    def build(self, input_shape):
        if not self.head.built:
            self.head.build((None, int(self.backbone.output_shape[-1])))
        self.built = True

    def call(self, images, training=False):
        if training:
            images01 = self.augment(images)
        else:
            images01 = ops.cast(images, "float32") / 255.0
        # Augment first, rotate after: the four rotations are of the same augmented view, so
        # nothing but the rotation tells them apart.
        rotated, labels = rotation_batch(normalise(images01, self.mean, self.std))
        features = self.backbone(rotated, training=training)
        logits = ops.cast(self.head(features), "float32")
        return {"logits": logits, "labels": labels}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # y is ignored: the labels are the rotations, made in call.
        loss = _cross_entropy(y_pred)
        if self.weight_decay:
            loss = loss + coupled_l2(self.trainable_weights, self.weight_decay)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.rotation_accuracy.update_state(y_pred["labels"], y_pred["logits"])
        self.cross_entropy.update_state(_cross_entropy(y_pred))
        return self.get_metrics_result()


def _cross_entropy(y_pred):
    return ops.mean(keras.losses.sparse_categorical_crossentropy(
        y_pred["labels"], y_pred["logits"], from_logits=True
    ))


# ---------------------------------------------------------------------------------------------
# The pretrain job
# ---------------------------------------------------------------------------------------------


def pretrain(data_config, backbone, epochs, batch_size, lr, weight_decay, seed, output,
             log=print, callbacks=(), jit_compile=None):
    """Pre-trains a backbone by rotation prediction on a run's training images.

    The images are the long-tailed training subset exactly as ``ltpll train`` would make it
    (:func:`ltpll.data.prepare.prepare_data` with the same ``data_config`` and ``seed``); their
    labels and candidate sets are not used. Pass the same dataset, imbalance flags and seed as
    the later training run, or the backbone will have seen images that run holds out (and not
    seen some it trains on).

    Training: SGD with momentum 0.9, cosine decay from ``lr`` over all steps, coupled L2
    ``weight_decay``; each step takes ``batch_size`` images, i.e. ``4 * batch_size`` rotated
    ones. The last partial batch of an epoch is dropped; epoch ``e``'s order depends on
    ``(seed, e)`` only.

    Args:
        data_config: a :class:`~ltpll.config.DataConfig`.
        backbone: a registered backbone name (``ltpll.components.names("backbone")``).
        epochs, batch_size, lr, weight_decay: optimisation settings.
        seed: decides the subset (as in ``ltpll train``), initialisation, order, augmentation.
        output: directory to create; refused if it exists and is not empty. Written all at once
            at the end (from a temporary sibling directory), so an interrupted run leaves none.
        log: function for one-line progress messages.
        callbacks: extra Keras callbacks (the CLI's progress display).
        jit_compile: XLA-compile the step (TensorFlow); None: the machine's fast path (XLA on
            a GPU, a plain graph on a CPU: :func:`ltpll.environment.xla_is_faster`).

    Returns:
        ``(backbone, summary)``: the trained backbone model and the ``pretrain.json`` dict.

    Raises:
        LTPLLError: bad settings, data or output directory (before training), a loss that
            became NaN (nothing is written), or a failure to move the result into place.
    """
    _check_settings(backbone, epochs, batch_size, lr, weight_decay)
    data_config.validate()
    check_pretrain_output(output)
    keras.utils.set_random_seed(seed)
    images = prepare_data(data_config, seed, log=log).images
    if len(images) < batch_size:
        raise LTPLLError(f"--batch-size {batch_size} is larger than the training set "
                         f"({len(images)} images)")
    if images.shape[1] != images.shape[2]:
        raise LTPLLError(f"rotation pre-training needs square images; these are "
                         f"{images.shape[1]}x{images.shape[2]} (pass --image-size)")
    image_size = int(images.shape[1])
    mean, std = channel_statistics(images)

    net = components.build("backbone", backbone,
                           components.BuildContext(image_size=image_size))
    model = RotationPretrainer(net, mean=mean, std=std, weight_decay=weight_decay, seed=seed)
    batches, steps = _image_batches(images, batch_size, seed + 2, epochs)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, epochs * steps),
                                                   alpha=COSINE_ALPHA),
            momentum=MOMENTUM,
        ),
        jit_compile=xla_is_faster() if jit_compile is None else jit_compile,
    )
    log(f"rotation pre-training: {len(images)} images x 4 rotations, {steps} steps per epoch")
    started = time.time()
    history = model.fit(batches, epochs=epochs, steps_per_epoch=steps, shuffle=False,
                        callbacks=list(callbacks), verbose=0)
    seconds = time.time() - started
    last = {key: float(values[-1]) for key, values in history.history.items()}
    if not math.isfinite(last["loss"]):
        raise LTPLLError(f"the pre-training loss became {last['loss']}; nothing was written "
                         "(try a lower --lr)")

    summary = {
        "format": PRETRAIN_FORMAT,
        "version": PRETRAIN_VERSION,
        "task": "rotation",
        "backbone": backbone,
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "dataset": data_config.dataset,
        "data": dataclasses.asdict(data_config),
        "num_images": len(images),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "seed": int(seed),
        "keras_backend": keras.backend.backend(),
        # Means over the last epoch's (augmented) training batches.
        "rotation_accuracy": last["acc"],
        "loss": last["loss"],
        "cross_entropy": last["ce"],
        "seconds": seconds,
    }
    _write_result(output, net, summary)
    return net, summary


def _check_settings(backbone, epochs, batch_size, lr, weight_decay):
    """Fails on bad settings before the (possibly long) data loading."""
    components.get("backbone", backbone)  # an unknown name is a one-line error
    if epochs < 1:
        raise LTPLLError(f"--epochs must be >= 1; received {epochs}")
    if batch_size < 1:
        raise LTPLLError(f"--batch-size must be >= 1; received {batch_size}")
    if not lr > 0:
        raise LTPLLError(f"--lr must be > 0; received {lr}")
    if weight_decay < 0:
        raise LTPLLError(f"--weight-decay must be >= 0; received {weight_decay}")


def check_pretrain_output(path):
    """Refuses an output that holds a pretrain result, or anything else.

    Raises:
        LTPLLError: if ``path`` is a file, holds ``pretrain.json`` or is a non-empty directory.
    """
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise LTPLLError(f"--output {path} exists and is not a directory")
    if os.path.exists(os.path.join(path, PRETRAIN_FILES["summary"])):
        raise LTPLLError(f"{path} already holds a pretrain result; choose another --output or "
                         "delete it")
    if os.listdir(path):
        raise LTPLLError(f"--output {path} exists and is not empty; choose another --output")


def _image_batches(images, batch_size, seed, epochs):
    """Shuffled uint8 image batches of whole epochs, and the steps per epoch.

    The training pipeline of ``ltpll train`` (:func:`ltpll.data.pipeline.train_batches`: in
    memory or streamed from the files, tf.data when TensorFlow is installed, else numpy for
    JAX) fed a constant one-column candidate matrix, which this task ignores; the tf.data path
    drops the targets.
    """
    unused = np.ones((len(images), 1), dtype=bool)
    batches, steps = train_batches(images, unused, np.full(len(images), -1), batch_size, seed,
                                   epochs)
    if tensorflow_available():
        batches = batches.map(lambda x, y: x)
    return batches, steps


def _write_result(output, backbone, summary):
    """Writes the weights and pretrain.json into a temporary sibling, then renames it.

    A crash leaves at most a hidden ``.name.tmp-*`` sibling, never a half-written ``output``;
    if the rename fails, the sibling is kept (pre-training took long) and the error names it.
    """
    check_pretrain_output(output)  # again: something may have appeared while we trained
    try:
        with atomic_directory(output, keep_on_failure=True) as tmp:
            backbone.save_weights(os.path.join(tmp, PRETRAIN_FILES["weights"]))
            write_json(os.path.join(tmp, PRETRAIN_FILES["summary"]), summary)
    except DirectoryNotMoved as error:
        raise LTPLLError(f"could not move the result into {error.target} ({error.reason}); it "
                         f"is kept in {error.kept}") from None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_pretrained_backbone(backbone, directory, backbone_name, image_size):
    """Loads a ``ltpll pretrain`` result into a freshly built backbone, after checking it fits.

    Args:
        backbone: the built backbone model to load into (its weights are overwritten).
        directory: the ``--output`` of ``ltpll pretrain``.
        backbone_name: the name ``backbone`` was built from (``resnet18``...), checked against
            the one pretrained (different backbones may share layer names and shapes).
        image_size: the height (= width) of the images ``backbone`` is built for, checked too
            (the weights of a convnet load at any size, but would not fit the images).

    Returns:
        The parsed ``pretrain.json`` dict (mean, std, data settings, rotation accuracy...).

    Raises:
        LTPLLError: for a missing directory or file, a malformed pretrain.json, another
            backbone or image size, or weights that cannot be loaded; always one line.
    """
    if not os.path.isdir(directory):
        raise LTPLLError(f"pretrained backbone directory {directory} does not exist")
    summary_path = os.path.join(directory, PRETRAIN_FILES["summary"])
    weights_path = os.path.join(directory, PRETRAIN_FILES["weights"])
    if not os.path.exists(summary_path):
        raise LTPLLError(f"{directory} holds no ltpll pretrain result (no "
                         f"{PRETRAIN_FILES['summary']})")
    summary = _read_summary(summary_path)
    if summary["backbone"] != backbone_name:
        raise LTPLLError(f"{directory} holds a pretrained {summary['backbone']!r} backbone, not "
                         f"{backbone_name!r}; pass --backbone {summary['backbone']} or pretrain "
                         f"a {backbone_name}")
    if int(summary["image_size"]) != int(image_size):
        raise LTPLLError(f"{directory} was pretrained on {summary['image_size']}x"
                         f"{summary['image_size']} images, these are {image_size}x{image_size}; "
                         f"pass --image-size {summary['image_size']}")
    if not os.path.exists(weights_path):
        raise LTPLLError(f"{directory} has no {PRETRAIN_FILES['weights']}; pretrain again")
    try:
        backbone.load_weights(weights_path)
    except (OSError, ValueError, KeyError, TypeError) as error:  # h5py: OSError; Keras: ValueError
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LTPLLError(f"cannot load the pretrained weights {weights_path}: {first_line}"
                         ) from None
    return summary


def _read_summary(path):
    try:
        summary = read_json(path)
    except (OSError, ValueError) as error:
        raise LTPLLError(f"{path} is not readable JSON ({type(error).__name__})") from None
    if not isinstance(summary, dict) or summary.get("format") != PRETRAIN_FORMAT:
        raise LTPLLError(f"{path} is not an ltpll pretrain.json")
    if summary.get("version") != PRETRAIN_VERSION:
        raise LTPLLError(f"{path} was written by an incompatible ltpll (pretrain version "
                         f"{summary.get('version')}, this ltpll reads {PRETRAIN_VERSION})")
    missing = [key for key in ("backbone", "image_size") if key not in summary]
    if missing:
        raise LTPLLError(f"{path} is malformed: no {', '.join(missing)}")
    return summary


__all__ = [
    "RotationPretrainer",
    "check_pretrain_output",
    "load_pretrained_backbone",
    "pretrain",
    "rotate90",
    "rotation_batch",
]
