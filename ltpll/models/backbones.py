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

Each is a function ``(image_size, **options) -> keras.Model`` registered in
:mod:`ltpll.components`; :func:`build_backbone` builds one by name.
"""

import keras
from keras import layers

from ltpll import components


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


def build_backbone(name, image_size=32, **options):
    """Builds a registered backbone by name (``ltpll.components.names("backbone")``).

    Raises:
        LTPLLError: for an unknown name.
    """
    return components.build("backbone", {"name": name, **options},
                            components.BuildContext(image_size=image_size))
