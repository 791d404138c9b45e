"""``--backbone keras-hub:<preset>``: the backbone of a keras-hub preset as an ltpll backbone.

keras-hub is optional (``pip install keras-hub``, or ``pip install ltpll[hub]``). When it is
installed, this module imports it, so a saved model holding a keras-hub backbone reloads
(``ltpll.saving.register_layers`` imports every component's module); when it is not, only
building such a backbone fails, with one line saying how to install it.

A preset is what ``keras_hub.models.Backbone.from_preset`` takes: a built-in name
(``resnet_50_imagenet``), a ``kaggle://`` or ``hf://`` handle, or a local preset directory (one
written by ``backbone.save_to_preset(dir)``). The backbone gets the input its preset's image
converter makes of 0..255 pixels (its ``scale`` and ``offset``; see
:class:`~ltpll.models.backbones.PixelPreprocessing`), or ltpll's normalised images when the
preset has no image converter. Its output is pooled to ``[B, D]`` features: global average
pooling of a feature map ``[B, H, W, D]``, the mean over the tokens of ``[B, T, D]``.
"""

import keras
from keras import layers

from ltpll.errors import LTPLLError
from ltpll.models.backbones import PixelPreprocessing

try:  # registers keras-hub's layers, so a saved model with such a backbone reloads
    import keras_hub
except ImportError:  # optional
    keras_hub = None

INSTALL = "pip install keras-hub"


def keras_hub_backbone(image_size=32, preset=None):
    """The backbone of keras-hub preset ``preset``, taking ltpll's normalised images
    ``[B, image_size, image_size, 3]`` and returning pooled features ``[B, D]``.

    Raises:
        LTPLLError: one line, without keras-hub, without a preset, or for a preset that cannot
            be loaded (offline, unknown name, not an image backbone).
    """
    if keras_hub is None:
        raise LTPLLError(f"--backbone keras-hub needs the keras-hub package: {INSTALL}")
    if not preset:
        raise LTPLLError("--backbone keras-hub needs a preset: --backbone keras-hub:<preset> "
                         "(e.g. keras-hub:resnet_50_imagenet or a local preset directory)")
    try:
        network = keras_hub.models.Backbone.from_preset(preset)
    except Exception as error:  # kagglehub, huggingface and file errors alike
        raise LTPLLError(f"could not load the keras-hub preset {preset!r} "
                         f"({_first_line(error)}); check its name and that you are online, or "
                         "pass a local preset directory") from None
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = inputs
    converter = _image_converter(preset)
    if converter is not None:
        x = PixelPreprocessing(scale=_or(converter.scale, 1.0), offset=_or(converter.offset, 0.0),
                               name="preset_preprocessing")(x)
    try:
        x = network(x)
    except Exception as error:
        raise LTPLLError(f"keras-hub preset {preset!r} is not an image backbone "
                         f"({_first_line(error)})") from None
    if isinstance(x, dict) or len(x.shape) not in (2, 3, 4):
        raise LTPLLError(f"keras-hub preset {preset!r} does not output image features "
                         "([B, D], [B, T, D] or [B, H, W, D])")
    if len(x.shape) == 4:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    elif len(x.shape) == 3:
        x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, x, name="keras_hub_backbone")


def _image_converter(preset):
    """The preset's image converter, or None when it has none (a bare backbone preset)."""
    try:
        return keras_hub.layers.ImageConverter.from_preset(preset)
    except (FileNotFoundError, ValueError):
        return None


def _or(value, default):
    return default if value is None else value


def _first_line(error):
    text = " ".join(str(error).strip().split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
