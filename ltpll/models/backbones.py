"""Backbones: image batch in, feature vectors out.

A backbone maps a normalised float image batch ``[B, H, W, 3]`` to features ``[B, D]``. The
linear head that turns features into logits belongs to :class:`~ltpll.models.pll_model.PLLModel`,
not to the backbone, because RECORDS needs that same head applied to the moving feature mean
(prior = softmax(head(F))).

* ``resnet18``: the CIFAR variant of ResNet-18 used by the RECORDS paper: 3x3 stem with stride 1,
  no max-pool, four stages of two basic blocks (64/128/256/512 channels), global average pooling,
  512-d features.
* ``resnet-small``: the same design with 16/32/64 channels and one block per stage (64-d
  features), for CPU work: tests, the demo and CPU benchmarks.
* ``tiny``: one conv layer and pooling, no batch normalisation; for unit tests where
  per-replica batch statistics would get in the way of exact comparisons.
* ``resnet50``: the ImageNet ResNet-50 of ``keras.applications`` (7x7/2 stem and max-pool,
  bottleneck stages, 2048-d features), from scratch or with pretrained weights
  (``--pretrained imagenet`` or a weights file); for photos at 128-224 px.
* ``keras-hub:<preset>`` (:mod:`ltpll.models.hub`): the backbone of a keras-hub preset, pooled.

Each is a function ``(image_size, **options) -> keras.Model`` registered in
:mod:`ltpll.components`; :func:`build_backbone` builds one by name.

**What a pretrained network sees.** ltpll's own backbones take what PLLModel gives them, images
in [0, 1] normalised with the training set's per-channel mean and std. A network pretrained
elsewhere expects the input it was trained on: keras.applications' ResNet-50 the "caffe"
preprocessing (0..255 pixels in BGR order, ImageNet mean pixel subtracted, no scaling), a
keras-hub preset what its image converter makes of 0..255 pixels. Such a backbone therefore
starts with a :class:`PixelPreprocessing` layer that undoes ltpll's normalisation (back to
0..255 RGB pixels) and applies the network's own preprocessing, with ``keras.ops`` only (every
backend, inside the compiled step, in exported models). The model that normalises tells it the
statistics it uses (:func:`set_input_statistics`, called by PLLModel and the rotation
pretrainer), so the pretrained network gets exactly the pixels' standard preprocessing whatever
the training set's statistics; ``tests/test_pretrained_backbones.py`` checks it against
``keras.applications.resnet50.preprocess_input``. ``resnet50`` keeps the layer when trained from
scratch too, so a weights file fits it either way.
"""

import contextlib
import os
import socket
import warnings

import keras
import numpy as np
from keras import layers, ops

from ltpll import components
from ltpll.errors import LTPLLError


def _conv_bn(x, filters, stride, name):
    x = layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{name}_conv",
    )(x)
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)


def _basic_block(x, filters, stride, name):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""
    shortcut = x
    y = _conv_bn(x, filters, stride, f"{name}_a")
    y = layers.ReLU(name=f"{name}_a_relu")(y)
    y = _conv_bn(y, filters, 1, f"{name}_b")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=stride, use_bias=False,
            kernel_initializer="he_normal", name=f"{name}_proj_conv",
        )(x)
        shortcut = layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, name=f"{name}_proj_bn"
        )(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def cifar_resnet(widths, blocks_per_stage, image_size=32, name="resnet"):
    """A CIFAR-style ResNet (3x3 stride-1 stem, no max-pool) returning pooled features.

    Args:
        widths: channels of each stage; stages after the first halve the resolution.
        blocks_per_stage: basic blocks in each stage.
        image_size: input height and width.
        name: model name.

    Returns:
        A functional ``keras.Model`` from ``[B, image_size, image_size, 3]`` floats to
        ``[B, widths[-1]]`` features.
    """
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = _conv_bn(inputs, widths[0], 1, "stem")
    x = layers.ReLU(name="stem_relu")(x)
    for stage, (filters, blocks) in enumerate(zip(widths, blocks_per_stage)):
        for block in range(blocks):
            stride = 2 if (stage > 0 and block == 0) else 1
            x = _basic_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}")
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, features, name=name)


def tiny_convnet(image_size=32, width=16, name="tiny"):
    """One conv layer, ReLU and global pooling: fast, and free of batch statistics."""
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Conv2D(width, 3, strides=2, padding="same", name="conv")(inputs)
    x = layers.ReLU(name="relu")(x)
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, features, name=name)


def resnet18(image_size=32):
    """The CIFAR ResNet-18 of the RECORDS paper: 64/128/256/512 channels, 512-d features."""
    return cifar_resnet((64, 128, 256, 512), (2, 2, 2, 2), image_size, name="resnet18")


def resnet_small(image_size=32):
    """16/32/64 channels, one block per stage, 64-d features: for CPU work."""
    return cifar_resnet((16, 32, 64), (1, 1, 1), image_size, name="resnet_small")


# --- pretrained networks ---------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="ltpll")
class PixelPreprocessing(layers.Layer):
    """ltpll's normalised images turned into the input a pretrained network expects.

    ``pixels = 255 * (images * std + mean)`` undoes the model's normalisation (``mean``, ``std``:
    per channel, in [0, 1] units; set by :func:`set_input_statistics`), then the output is
    ``pixels[..., ::-1] * scale + offset`` (``::-1`` only with ``reverse_channels``: RGB to BGR),
    ``scale`` and ``offset`` per output channel. With the defaults ``mean=0, std=1`` the input
    is images in [0, 1]. Computed in float32 whatever the dtype policy.

    Args:
        scale, offset: a number or three, per output channel.
        reverse_channels: RGB to BGR before ``scale`` and ``offset`` (caffe-style weights).
        mean, std: the per-channel statistics the input was normalised with.
    """

    def __init__(self, scale=1.0, offset=0.0, reverse_channels=False, mean=(0.0, 0.0, 0.0),
                 std=(1.0, 1.0, 1.0), **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.scale = _per_channel(scale)
        self.offset = _per_channel(offset)
        self.reverse_channels = bool(reverse_channels)
        self.set_input_statistics(mean, std)

    def set_input_statistics(self, mean, std):
        """The statistics the model normalises its images with before this layer."""
        self.mean = _per_channel(mean)
        self.std = _per_channel(std)

    def call(self, images):
        images = ops.cast(images, "float32")
        pixels = 255.0 * (images * ops.convert_to_tensor(self.std, "float32")
                          + ops.convert_to_tensor(self.mean, "float32"))
        if self.reverse_channels:
            pixels = ops.flip(pixels, axis=-1)
        return (pixels * ops.convert_to_tensor(self.scale, "float32")
                + ops.convert_to_tensor(self.offset, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": list(self.scale), "offset": list(self.offset),
                "reverse_channels": self.reverse_channels, "mean": list(self.mean),
                "std": list(self.std)}


def _per_channel(value):
    values = np.asarray(value, dtype="float64").ravel()
    if values.size == 1:
        values = np.repeat(values, 3)
    if values.size != 3:
        raise LTPLLError(f"expected one value or three (per RGB channel); received {value!r}")
    return tuple(float(v) for v in values)


# keras.applications' "caffe" preprocessing (resnet50.preprocess_input): RGB -> BGR, minus the
# ImageNet mean pixel (in BGR order), no scaling.
CAFFE = {"scale": 1.0, "offset": (-103.939, -116.779, -123.68), "reverse_channels": True}


def set_input_statistics(backbone, mean, std):
    """Tells every layer of ``backbone`` that undoes the model's normalisation (any layer with a
    ``set_input_statistics(mean, std)`` method: :class:`PixelPreprocessing`) which per-channel
    ``mean`` and ``std`` the model normalises with. Called by the models that normalise before
    their backbone; must run before the backbone is traced."""
    for layer in backbone._flatten_layers(include_self=True, recursive=True):
        setter = getattr(layer, "set_input_statistics", None)
        if callable(setter):
            setter(mean, std)


# Where keras.applications fetches the ImageNet weights of include_top=False ResNet-50 from;
# keras.utils.get_file keeps them in $KERAS_HOME/models (default ~/.keras/models).
RESNET50_IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET50_IMAGENET_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                         + RESNET50_IMAGENET_FILE)
# Seconds a connection to the download may stall before it fails (urllib has no timeout of its
# own: a network that drops packets would otherwise hang the run for minutes).
DOWNLOAD_TIMEOUT_S = 60


def resnet50(image_size=32, weights=None):
    """ResNet-50 of ``keras.applications`` (ImageNet stem: 7x7/2 conv and 3x3/2 max-pool),
    global average pooled: 2048-d features, behind its "caffe" :class:`PixelPreprocessing`.

    Args:
        image_size: input height and width (ImageNet weights were trained at 224).
        weights: ``None`` (or ``"none"``): random initialisation; ``"imagenet"``: the Keras
            ImageNet weights, downloaded by ``keras.utils.get_file`` on first use into
            ``~/.keras/models`` (``$KERAS_HOME/models``) and read from there afterwards; or the
            path of a weights file of ``keras.applications.ResNet50(include_top=False)`` (the
            ImageNet ``.h5`` copied from another machine, or ``.weights.h5`` saved by Keras, of
            this backbone or of the bare application).

    Raises:
        LTPLLError: one line, when the weights cannot be fetched or do not fit.
    """
    weights = _weights_source(weights)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    pixels = PixelPreprocessing(**CAFFE, name="caffe_preprocessing")(inputs)
    with _loading_weights("resnet50", weights):
        # input_tensor: the application's layers follow the preprocessing in one flat model,
        # so weight files name the same layers whether saved from it or from this backbone.
        network = keras.applications.ResNet50(include_top=False, weights=weights,
                                              input_tensor=pixels, pooling="avg")
    # The same layers, taking one tensor (the application's model takes a list of one).
    return keras.Model(inputs, network.output, name="resnet50")


def _weights_source(weights):
    if weights is None or str(weights).strip().lower() in ("", "none"):
        return None
    if weights == "imagenet":
        return weights
    path = os.path.abspath(os.path.expanduser(str(weights)))
    if not os.path.isfile(path):
        raise LTPLLError(f"--backbone-weights {weights}: no such file (give imagenet or the path "
                         "of a .h5 / .weights.h5 weights file)")
    if not path.endswith(".h5"):
        raise LTPLLError(f"--backbone-weights {weights} is not a .h5 / .weights.h5 weights file")
    return path


@contextlib.contextmanager
def _loading_weights(name, weights):
    """Failures to fetch or load ``weights`` as one-line LTPLLErrors; downloads time out."""
    if weights is None:
        yield
        return
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            # Keras warns, layer by layer, about a file that lacks some of the model's layers
            # (and leaves those initialised at random): the first such warning is the error.
            warnings.filterwarnings("error", message=".*no matching group found",
                                    category=UserWarning)
            yield
    except LTPLLError:
        raise
    except Exception as error:  # get_file raises a bare Exception for a failed download
        reason = _reason(error)
        if weights == "imagenet":
            raise LTPLLError(
                f"could not fetch the ImageNet weights of {name} ({reason}); are you offline? "
                f"Download {RESNET50_IMAGENET_URL} where you are online and copy it into "
                "~/.keras/models (or $KERAS_HOME/models), or pass --pretrained PATH to a local "
                "weights file") from None
        raise LTPLLError(f"could not load --backbone-weights {weights} into {name} ({reason}); "
                         "it must hold the weights of keras.applications.ResNet50("
                         "include_top=False)") from None
    finally:
        socket.setdefaulttimeout(previous)


def _reason(error):
    """The informative part of an exception's message, on one line."""
    text = str(error).strip()
    text = text.split(" -- ", 1)[-1] if text.startswith("URL fetch failure") else text
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def build_backbone(name, image_size=32, **options):
    """Builds a registered backbone by name (``ltpll.components.names("backbone")``).

    Raises:
        LTPLLError: for an unknown name.
    """
    return components.build("backbone", {"name": name, **options},
                            components.BuildContext(image_size=image_size))
