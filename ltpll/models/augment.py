"""Batched, jit-compilable weak and strong image augmentation.

RECORDS (and PiCO before it) trains on two views of every image: a *weak* view (random resized
crop, flip, colour jitter, grayscale) and a *strong* view (crop, flip, a RandAugment variant,
cutout).  The authors build both in a PyTorch data loader, one PIL image at a time
(``utils/cifar10.py`` and ``utils/randaugment.py`` of MediaBrain-SJTU/RECORDS-LTPLL).  Doing the
same per image in Python would starve a GPU that trains ResNet-18 on CIFAR at tens of thousands of
images per second, and Keras' own RandAugment / RandomCrop / RandomZoom refuse to be jit-compiled
(``supports_jit=False``) and crawl inside a training step.

So the two layers here augment a whole batch inside the compiled step, with ``keras.ops`` and
``keras.random`` only, which keeps them backend-neutral (TensorFlow under XLA and JAX under
``jax.jit``):

* every random parameter is drawn per image, as a column of one ``[B, K]`` uniform draw;
* all geometry of a view (crop, flip, and for the strong view the rotate / shear / translate ops)
  is a chain of per-image affine maps applied to the coordinates of the output pixels, then the
  image is read once with a gather-based bilinear sampler (no ``O(H*W*H*W)`` work, one
  interpolation instead of one per op);
* per-image choices among colour ops are computed for the whole batch and picked with
  ``ops.where`` on the chosen op index; the strong view's table-like ops (AutoContrast,
  Brightness, Contrast, Equalize, Posterize, Solarize) are built as 256-entry look-up tables per
  image and channel, picked per image by a one-hot matmul and applied with one gather, which
  also reproduces PIL's 8-bit rounding.

Pixel values are kept in ``[0, 255]`` floats inside (the authors' ops are defined on 8-bit values:
posterize, solarize thresholds, equalize), and divided by 255 at the end.

Coordinates: geometry works in *continuous* coordinates where pixel ``k`` covers ``[k, k+1)``, as
PIL does, so that the authors' affine coefficients can be used as written; the sampler itself
takes *pixel-centre* coordinates (pixel ``k`` at ``k``).

Where this departs from the authors' PIL pipeline, knowingly:

* rotate / shear / translate are read bilinearly in the single composed resampling (PIL uses
  nearest neighbour for each op);  which pixels are uncovered (black) is exactly PIL's;
* statistics-based ops (AutoContrast, Equalize, Contrast, Sharpness) of a round that comes
  *before* a geometric round see the image in its final frame, not in the intermediate one;
* the weak view's colour jitter works on continuous values (no 8-bit rounding between steps).
"""

import functools
import math

import keras
import numpy as np
from keras import ops

# ---------------------------------------------------------------------------------------------
# Policy constants (from the RECORDS/PiCO pipeline)
# ---------------------------------------------------------------------------------------------

#: RandAugment op list and order of the authors' ``augment_list()``; an op's index is its id.
RANDAUGMENT_OPS = (
    "AutoContrast",
    "Brightness",
    "Color",
    "Contrast",
    "Equalize",
    "Identity",
    "Posterize",
    "Rotate",
    "Sharpness",
    "ShearX",
    "ShearY",
    "Solarize",
    "TranslateX",
    "TranslateY",
)

#: Magnitude range of each op; the magnitude is drawn uniformly in it, per image and per round,
#: exactly as the authors do (``val = min + (max - min) * random()``).  Brightness, Color,
#: Contrast and Sharpness only ever *reduce* (factors below 1) in their policy; kept as is.
RANDAUGMENT_RANGES = {
    "AutoContrast": (0.0, 1.0),
    "Brightness": (0.05, 0.95),
    "Color": (0.05, 0.95),
    "Contrast": (0.05, 0.95),
    "Equalize": (0.0, 1.0),
    "Identity": (0.0, 1.0),
    "Posterize": (4.0, 8.0),  # bits kept = int(v), so 4..7
    "Rotate": (-30.0, 30.0),  # degrees, counter-clockwise
    "Sharpness": (0.05, 0.95),
    "ShearX": (-0.3, 0.3),
    "ShearY": (-0.3, 0.3),
    "Solarize": (0.0, 256.0),  # threshold on 0..255 values
    "TranslateX": (-0.3, 0.3),  # fraction of the width
    "TranslateY": (-0.3, 0.3),  # fraction of the height
}

_OP = {name: i for i, name in enumerate(RANDAUGMENT_OPS)}
_NUM_OPS = len(RANDAUGMENT_OPS)

#: PIL fills the area uncovered by rotate / shear / translate with black (its default).
GEOMETRY_FILL = 0.0
#: Cutout paints this RGB colour (the authors' ``(125, 123, 114)``).
CUTOUT_COLOR = (125.0, 123.0, 114.0)
#: Cutout side is ``U(0, 0.5)`` times the image width, as in the authors' ``RandomAugment``.
CUTOUT_MAX_FRACTION = 0.5

#: RandomResizedCrop as configured by the authors (torchvision defaults except the scale).
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
#: torchvision tries 10 random boxes and falls back to a centre crop; so do we, vectorised.
CROP_ATTEMPTS = 10

#: ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` applied with p=0.8, then ``RandomGrayscale(p=0.2)``.
JITTER_STRENGTH = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
JITTER_PROB = 0.8
GRAYSCALE_PROB = 0.2

# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------


def bilinear_sample(images, x, y):
    """Read ``images`` at real-valued pixel-centre coordinates, bilinearly, clamping at the edges.

    Args:
        images: float ``[B, H, W, C]``.
        x, y: float ``[B, h, w]`` source column / row of every output pixel (pixel ``k`` at ``k``).

    Returns:
        float ``[B, h, w, C]``.  Integer coordinates read the pixel exactly (the other weights are
        0), which is what makes the identity and flip maps lossless.

    Implemented as four gathers on the flattened batch (``ops.take``), which XLA compiles to one
    gather each; there is no per-image loop and no dense resampling matrix.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    x0f = ops.floor(x)
    y0f = ops.floor(y)
    wx = ops.expand_dims(x - x0f, -1)
    wy = ops.expand_dims(y - y0f, -1)
    x0 = ops.cast(x0f, "int32")
    y0 = ops.cast(y0f, "int32")
    x1 = ops.clip(x0 + 1, 0, width - 1)
    y1 = ops.clip(y0 + 1, 0, height - 1)
    x0 = ops.clip(x0, 0, width - 1)
    y0 = ops.clip(y0, 0, height - 1)

    batch = ops.shape(images)[0]
    offset = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    flat = ops.reshape(images, (-1, channels))

    def read(rows, cols):
        return ops.take(flat, offset + rows * width + cols, axis=0)

    top = read(y0, x0) * (1.0 - wx) + read(y0, x1) * wx
    bottom = read(y1, x0) * (1.0 - wx) + read(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def affine_transform(images, transforms, fill_value=0.0):
    """Warp each image by its own affine map, in one bilinear gather.

    Args:
        images: ``[B, H, W, C]``, any real dtype.
        transforms: ``[B, 6]`` coefficients ``(a0, a1, a2, b0, b1, b2)`` mapping every *output*
            pixel ``(x, y)`` (pixel-centre coordinates) to the *source* point
            ``(a0*x + a1*y + a2, b0*x + b1*y + b2)`` -- the convention of
            ``keras.ops.image.affine_transform`` without its projective terms.
        fill_value: value of output pixels whose source point's nearest pixel lies outside the
            image.

    Returns:
        float32 ``[B, H, W, C]``.

    This is the public face of the sampler (tests check that the identity and a horizontal flip
    are exact); the augment layers call :func:`bilinear_sample` on coordinates they compose.
    """
    images = ops.cast(images, "float32")
    height, width = images.shape[1], images.shape[2]
    t = ops.reshape(ops.cast(transforms, "float32"), (-1, 6, 1, 1))
    cols, rows = _pixel_grid(height, width)
    cols = cols - 0.5
    rows = rows - 0.5
    x = t[:, 0] * cols + t[:, 1] * rows + t[:, 2]
    y = t[:, 3] * cols + t[:, 4] * rows + t[:, 5]
    inside = _inside(x + 0.5, y + 0.5, height, width)
    warped = bilinear_sample(images, x, y)
    return ops.where(ops.expand_dims(inside, -1), warped, fill_value)


def _pixel_grid(height, width):
    """Continuous coordinates of the output pixel centres: ``(u, v)``, each ``[1, H, W]``."""
    u = np.broadcast_to(np.arange(width, dtype="float32") + 0.5, (height, width))
    v = np.broadcast_to(np.arange(height, dtype="float32")[:, None] + 0.5, (height, width))
    return ops.convert_to_tensor(u[None]), ops.convert_to_tensor(v[None])


def _inside(u, v, height, width):
    """Whether continuous coordinates fall on a pixel of an ``height x width`` image."""
    return (u >= 0.0) & (u < width) & (v >= 0.0) & (v < height)


def _per_image(values):
    """``[B]`` -> ``[B, 1, 1]``, to broadcast a per-image scalar over a coordinate grid."""
    return ops.reshape(values, (-1, 1, 1))


# ---------------------------------------------------------------------------------------------
# Random parameters
# ---------------------------------------------------------------------------------------------


class _Columns:
    """Hands out consecutive columns of one ``[B, K]`` uniform draw.

    One draw per call keeps the random-number work to a single kernel and makes every parameter
    per image; ``take(n)`` returns ``[B, n]`` (or ``[B]`` for ``n=None``).
    """

    def __init__(self, uniforms):
        self._uniforms = uniforms
        self._next = 0

    def take(self, n=None):
        start = self._next
        self._next += 1 if n is None else n
        if n is None:
            return self._uniforms[:, start]
        return self._uniforms[:, start : start + n]


def _lerp(lo, hi, u):
    return lo + (hi - lo) * u


# ---------------------------------------------------------------------------------------------
# Geometry: RandomResizedCrop + flip, RandAugment's affine ops
# ---------------------------------------------------------------------------------------------

_CROP_UNIFORMS = 2 * CROP_ATTEMPTS + 2


def _fallback_crop(height, width):
    """torchvision's fallback when no random box fits: the largest centred box within ratio."""
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif in_ratio > CROP_RATIO[1]:
        h, w = height, int(round(height * CROP_RATIO[1]))
    else:
        w, h = width, height
    return float(h), float(w), float((height - h) // 2), float((width - w) // 2)


def random_resized_crop_boxes(u, height, width):
    """Per-image ``RandomResizedCrop(scale=(0.2, 1), ratio=(3/4, 4/3))`` boxes.

    Follows torchvision: up to ``CROP_ATTEMPTS`` candidate boxes (area fraction uniform in the
    scale range, aspect ratio log-uniform, sides rounded to integers); the first that fits wins,
    its top-left corner is a uniform integer position; if none fits, a centred fallback box.  The
    attempts are drawn all at once and the first fitting one is picked with a min-reduction.

    Args:
        u: ``[B, 2 * CROP_ATTEMPTS + 2]`` uniforms.

    Returns:
        ``(top, left, crop_h, crop_w)``, float32 ``[B]`` each, in pixels.
    """
    n = CROP_ATTEMPTS
    area = _lerp(CROP_SCALE[0], CROP_SCALE[1], u[:, :n]) * (height * width)
    log_ratio = _lerp(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), u[:, n : 2 * n])
    ratio = ops.exp(log_ratio)
    w = ops.round(ops.sqrt(area * ratio))
    h = ops.round(ops.sqrt(area / ratio))
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)

    attempt = ops.arange(n, dtype="int32")[None, :]
    first = ops.min(ops.where(fits, attempt, n), axis=1)  # n when none fits
    found = first < n
    pick = ops.expand_dims(ops.minimum(first, n - 1), 1)
    h = ops.take_along_axis(h, pick, axis=1)[:, 0]
    w = ops.take_along_axis(w, pick, axis=1)[:, 0]
    top = ops.floor(u[:, 2 * n] * (height - h + 1.0))
    left = ops.floor(u[:, 2 * n + 1] * (width - w + 1.0))

    fb_h, fb_w, fb_top, fb_left = _fallback_crop(height, width)
    return (
        ops.where(found, top, fb_top),
        ops.where(found, left, fb_left),
        ops.where(found, h, fb_h),
        ops.where(found, w, fb_w),
    )


def _sample_crop(images, u, v, box, flip):
    """Read the crop ``box`` resized to ``H x W`` and optionally mirrored, at coordinates (u, v).

    ``(u, v)`` are continuous coordinates in the *resized-and-flipped crop* (the identity grid for
    the weak view, the output of the RandAugment maps for the strong one).  The crop is resized
    the way PIL's bilinear resize does after ``img.crop``: half-pixel centres, and neighbours
    clamped to the crop box (pixels outside the box never bleed in).
    """
    height, width = images.shape[1], images.shape[2]
    top, left, crop_h, crop_w = (_per_image(t) for t in box)
    u = ops.where(_per_image(flip), width - u, u)
    x = left + u * (crop_w / width) - 0.5
    y = top + v * (crop_h / height) - 0.5
    x = ops.clip(x, left, left + crop_w - 1.0)
    y = ops.clip(y, top, top + crop_h - 1.0)
    return bilinear_sample(images, x, y)


_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def _randaugment_inverse_map(op, value, height, width):
    """Per-image output->input affine map of one RandAugment round, as 6 ``[B, 1, 1]`` tensors.

    Coefficients are PIL's ``Image.transform(AFFINE, (a, b, c, d, e, f))`` data as the authors
    pass them: ``ShearX (1, v, 0, 0, 1, 0)``, ``ShearY (1, 0, 0, v, 1, 0)``,
    ``TranslateX (1, 0, v*W, 0, 1, 0)``, ``TranslateY (1, 0, 0, 0, 1, v*H)``, and
    ``Image.rotate(v)``'s matrix about the image centre.  Images whose op is not geometric get the
    identity.
    """
    is_op = {name: _per_image(op == _OP[name]) for name in _GEOMETRIC}
    value = _per_image(value)
    theta = value * (math.pi / 180.0)
    cos, sin = ops.cos(theta), ops.sin(theta)
    cx, cy = width / 2.0, height / 2.0
    rot_c = cx - cos * cx + sin * cy
    rot_f = cy - sin * cx - cos * cy
    zero, one = ops.zeros_like(value), ops.ones_like(value)

    a = ops.where(is_op["Rotate"], cos, one)
    b = ops.where(is_op["Rotate"], -sin, ops.where(is_op["ShearX"], value, zero))
    c = ops.where(is_op["Rotate"], rot_c, ops.where(is_op["TranslateX"], value * width, zero))
    d = ops.where(is_op["Rotate"], sin, ops.where(is_op["ShearY"], value, zero))
    e = ops.where(is_op["Rotate"], cos, one)
    f = ops.where(is_op["Rotate"], rot_f, ops.where(is_op["TranslateY"], value * height, zero))
    return a, b, c, d, e, f


def _apply_map(coefficients, u, v):
    a, b, c, d, e, f = coefficients
    return a * u + b * v + c, d * u + e * v + f


# ---------------------------------------------------------------------------------------------
# Continuous colour ops (the weak view's ColorJitter): float [B, H, W, 3] in 0..255, per-image
# factors of shape [B]
# ---------------------------------------------------------------------------------------------


def _per_pixel(values):
    """``[B]`` -> ``[B, 1, 1, 1]``."""
    return ops.reshape(values, (-1, 1, 1, 1))


def luma(images):
    """ITU-R 601-2 luma, as PIL's ``convert("L")``: ``[B, H, W, 1]``."""
    r, g, b = images[..., 0:1], images[..., 1:2], images[..., 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _blend(degenerate, images, factor):
    """PIL ``ImageEnhance``: ``degenerate + factor * (image - degenerate)``, clipped to 0..255."""
    return ops.clip(degenerate + _per_pixel(factor) * (images - degenerate), 0.0, 255.0)


def brightness(images, factor):
    """``ImageEnhance.Brightness``: blend with black."""
    return _blend(0.0, images, factor)


def saturation(images, factor):
    """``ImageEnhance.Color``: blend with the grayscale image."""
    return _blend(luma(images), images, factor)


def contrast(images, factor):
    """``ImageEnhance.Contrast``: blend with the image's mean luma."""
    mean = ops.mean(luma(images), axis=(1, 2, 3), keepdims=True)
    return _blend(mean, images, factor)


def hue(images, shift):
    """torchvision's ``adjust_hue``: rotate the HSV hue by ``shift`` (fraction of a turn)."""
    hsv = ops.image.rgb_to_hsv(images / 255.0, data_format="channels_last")
    h = hsv[..., 0:1] + _per_pixel(shift)
    h = h - ops.floor(h)
    hsv = ops.concatenate([h, hsv[..., 1:]], axis=-1)
    return ops.image.hsv_to_rgb(hsv, data_format="channels_last") * 255.0


def grayscale(images):
    """``RandomGrayscale``: luma replicated to three channels."""
    return ops.repeat(luma(images), 3, axis=-1)


def _select(op, candidates, default):
    """Per image, the candidate whose key equals ``op`` (``[B]`` int); ``default`` otherwise."""
    op = ops.reshape(op, (-1,) + (1,) * (len(default.shape) - 1))
    out = default
    for key, value in candidates:
        out = ops.where(op == key, value, out)
    return out


# ---------------------------------------------------------------------------------------------
# RandAugment colour ops, 8-bit exact like PIL: images hold integers 0..255 (in a float tensor)
#
# All of them but Color and Sharpness map each channel value through a table, so they are built
# as per-(image, channel) look-up tables of 256 entries ([B, C, 256], or broadcastable), chosen
# per image on those small tables, and applied with a single gather.  That is several times less
# full-size work per round than computing every candidate image, and it reproduces PIL's integer
# rounding (PIL truncates blends and rounds filters/conversions).  The builders share one
# signature, ``fn(images, hist, *args)``: ``hist`` holds the per-(image, channel) histograms,
# from which AutoContrast and Equalize read everything they need about the image.
# ---------------------------------------------------------------------------------------------

_LEVELS = np.arange(256, dtype="float32")


def _per_table(values):
    """``[B]`` -> ``[B, 1, 1]``, to broadcast a per-image scalar over ``[B, C, 256]`` tables."""
    return ops.reshape(values, (-1, 1, 1))


def _table_index(images):
    """Entry of every pixel value in a flattened ``[B, C, 256]`` table: int32 ``[B, H, W, C]``."""
    channels = images.shape[-1]
    batch = ops.shape(images)[0]
    values = ops.cast(ops.clip(images, 0.0, 255.0), "int32")
    plane = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1)) * channels
    return (plane + ops.arange(channels, dtype="int32")) * 256 + values


def _apply_table(index, table, batch, channels):
    """Look every pixel up in its image's and channel's row of ``table`` ([B, C, 256])."""
    table = ops.broadcast_to(table, (batch, channels, 256))
    return ops.take(ops.reshape(table, (-1,)), index, axis=0)


def _histograms(index, batch, channels):
    """Per-(image, channel) histograms ``[B, C, 256]`` as one scatter-add (``segment_sum``).

    One-hot vectors would be ``B*H*W*C*256`` floats (~200M at batch 256); the scatter-add touches
    each pixel once.
    """
    flat = ops.reshape(index, (-1,))
    hist = ops.segment_sum(
        ops.ones_like(flat, dtype="float32"), flat, num_segments=batch * channels * 256
    )
    return ops.reshape(hist, (-1, channels, 256))


def _lut_op(table_fn):
    """Turn a table builder ``fn(images, hist, *args) -> [B, C, 256]`` into an image op."""

    def op(images, *args):
        images = ops.cast(images, "float32")
        batch, channels = ops.shape(images)[0], images.shape[-1]
        index = _table_index(images)
        table = table_fn(images, _histograms(index, batch, channels), *args)
        return _apply_table(index, table, batch, channels)

    op.__name__ = table_fn.__name__.replace("_table", "")
    op.__doc__ = table_fn.__doc__
    return op


def _value_range(hist):
    """Smallest and largest value present in each channel: ``[B, C, 1]`` each.

    Read off the histograms, which the round has anyway, instead of reducing the image twice.
    """
    present = hist > 0
    lo = ops.min(ops.where(present, _LEVELS, 255.0), axis=-1, keepdims=True)
    hi = ops.max(ops.where(present, _LEVELS, 0.0), axis=-1, keepdims=True)
    return lo, hi


def autocontrast_table(images, hist):
    """``ImageOps.autocontrast``: stretch each channel's [min, max] to [0, 255] (flat: as is)."""
    lo, hi = _value_range(hist)
    scale = 255.0 / ops.maximum(hi - lo, 1.0)
    stretched = ops.clip(ops.floor(_LEVELS * scale - lo * scale), 0.0, 255.0)
    return ops.where(hi > lo, stretched, _LEVELS)


def equalize_table(images, hist):
    """``ImageOps.equalize``: PIL's per-channel histogram-equalisation table, exactly.

    PIL sets ``step = (N - count of the top value) // 255`` and
    ``lut[i] = (step // 2 + #pixels below i) // step``, or the identity when ``step`` is 0.
    """
    _, top_value = _value_range(hist)
    top_count = ops.sum(ops.where(_LEVELS == top_value, hist, 0.0), axis=-1, keepdims=True)
    step = ops.floor((ops.sum(hist, axis=-1, keepdims=True) - top_count) / 255.0)  # [B, C, 1]
    below = ops.cumsum(hist, axis=-1) - hist
    table = ops.floor((ops.floor(step / 2.0) + below) / ops.maximum(step, 1.0))
    return ops.where(step > 0, ops.clip(table, 0.0, 255.0), _LEVELS)


def brightness_table(images, hist, factor):
    """``ImageEnhance.Brightness``: PIL's blend with black, truncated."""
    return ops.floor(ops.clip(_LEVELS * _per_table(factor), 0.0, 255.0))


def contrast_table(images, hist, factor):
    """``ImageEnhance.Contrast``: blend with the rounded mean of the 8-bit luma, truncated."""
    mean = ops.mean(_luma_8bit(images), axis=(1, 2, 3))
    mean = _per_table(ops.floor(mean + 0.5))
    return ops.floor(ops.clip(mean + _per_table(factor) * (_LEVELS - mean), 0.0, 255.0))


def posterize_table(images, hist, bits):
    """``ImageOps.posterize``: keep the top ``bits`` bits of each value."""
    quantum = _per_table(2.0 ** (8.0 - bits))
    return ops.floor(_LEVELS / quantum) * quantum


def solarize_table(images, hist, threshold):
    """``ImageOps.solarize``: invert every value at or above ``threshold``."""
    return ops.where(_LEVELS < _per_table(threshold), _LEVELS, 255.0 - _LEVELS)


autocontrast = _lut_op(autocontrast_table)
equalize = _lut_op(equalize_table)
brightness_8bit = _lut_op(brightness_table)
contrast_8bit = _lut_op(contrast_table)
posterize = _lut_op(posterize_table)
solarize = _lut_op(solarize_table)


def _luma_8bit(images):
    """PIL's ``convert("L")`` on 8-bit RGB: luma rounded to an integer."""
    return ops.floor(luma(images) + 0.5)


def _blend_8bit(degenerate, images, factor):
    """PIL's ``Image.blend`` for factors in [0, 1]: the result truncated to an integer."""
    return ops.floor(ops.clip(degenerate + _per_pixel(factor) * (images - degenerate), 0.0, 255.0))


def color_8bit(images, factor):
    """``ImageEnhance.Color``: blend with the 8-bit grayscale image."""
    return _blend_8bit(_luma_8bit(images), images, factor)


def sharpness_8bit(images, factor):
    """``ImageEnhance.Sharpness``: blend with PIL's SMOOTH filter (3x3, centre weight 5, /13).

    As in PIL, the filtered image is rounded and its one-pixel border is the original image.
    """
    height, width = images.shape[1], images.shape[2]
    smooth = ops.floor((_box3x3(images) + 4.0 * images) / 13.0 + 0.5)
    interior = np.zeros((1, height, width, 1), dtype=bool)
    interior[:, 1:-1, 1:-1, :] = True
    return _blend_8bit(ops.where(interior, smooth, images), images, factor)


def _box3x3(images):
    """Sum of every pixel's 3x3 neighbourhood (borders: whatever, PIL does not use them)."""
    height, width = images.shape[1], images.shape[2]
    padded = ops.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = padded[:, 0:height] + padded[:, 1 : height + 1] + padded[:, 2 : height + 2]
    return rows[:, :, 0:width] + rows[:, :, 1 : width + 1] + rows[:, :, 2 : width + 2]


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


def _to_pixels(images):
    """Accept uint8 or 0..255 floats; work in float32 0..255."""
    if images.shape[-1] != 3 or len(images.shape) != 4:
        raise ValueError(f"expected images of shape [B, H, W, 3], got {images.shape}")
    return ops.cast(images, "float32")


def _to_unit(pixels):
    return ops.clip(pixels / 255.0, 0.0, 1.0)


def _crop_and_flip(images, columns):
    """Draw a RandomResizedCrop box and a flip per image; return ``(box, flip)``."""
    height, width = images.shape[1], images.shape[2]
    box = random_resized_crop_boxes(columns.take(_CROP_UNIFORMS), height, width)
    flip = columns.take() < 0.5
    return box, flip


_WEAK_UNIFORMS = _CROP_UNIFORMS + 1 + 1 + 4 + 4 + 1


def weak_view(images, uniforms):
    """The weak view from ``[B, _WEAK_UNIFORMS]`` uniforms (see :class:`WeakAugment`)."""
    pixels = _to_pixels(images)
    height, width = pixels.shape[1], pixels.shape[2]
    columns = _Columns(uniforms)
    box, flip = _crop_and_flip(pixels, columns)
    u, v = _pixel_grid(height, width)
    pixels = _sample_crop(pixels, u, v, box, flip)

    apply_jitter = columns.take() < JITTER_PROB
    jittered = _color_jitter(pixels, columns.take(4), columns.take(4))
    pixels = ops.where(_per_pixel(apply_jitter), jittered, pixels)

    to_gray = columns.take() < GRAYSCALE_PROB
    pixels = ops.where(_per_pixel(to_gray), grayscale(pixels), pixels)
    return _to_unit(pixels)


def _color_jitter(pixels, u_factors, u_order):
    """``ColorJitter(0.4, 0.4, 0.4, 0.1)``: four adjustments in a random order per image.

    Factors: brightness, contrast, saturation uniform in ``[0.6, 1.4]``, hue shift uniform in
    ``[-0.1, 0.1]``.  The order is a per-image random permutation (argsort of four uniforms); each
    of the four stages computes the four candidates and keeps the one the permutation names.
    """
    s = JITTER_STRENGTH
    factor_b = _lerp(1 - s["brightness"], 1 + s["brightness"], u_factors[:, 0])
    factor_c = _lerp(1 - s["contrast"], 1 + s["contrast"], u_factors[:, 1])
    factor_s = _lerp(1 - s["saturation"], 1 + s["saturation"], u_factors[:, 2])
    shift_h = _lerp(-s["hue"], s["hue"], u_factors[:, 3])
    order = ops.argsort(u_order, axis=-1)
    for stage in range(4):
        pixels = _jitter_stage(pixels, order[:, stage], factor_b, factor_c, factor_s, shift_h)
    return pixels


def _jitter_stage(pixels, adjustment, factor_b, factor_c, factor_s, shift_h):
    """One stage of :func:`_color_jitter`: per image, the adjustment its permutation names.

    Brightness, contrast and saturation are all a blend with a degenerate image (black, the
    mean luma, the luma), so one blend with the chosen degenerate and factor stands for the three
    (each result is bit-identical to its own op's); only the hue rotation is computed apart.
    """
    per_image = _per_pixel(adjustment)
    luma_ = luma(pixels)
    degenerate = ops.where(per_image == 0, 0.0, ops.where(
        per_image == 1, ops.mean(luma_, axis=(1, 2, 3), keepdims=True), luma_))
    factor = ops.where(adjustment == 0, factor_b,
                       ops.where(adjustment == 1, factor_c, factor_s))
    blended = _blend(degenerate, pixels, factor)
    return ops.where(per_image == 3, hue(pixels, shift_h), blended)


def _strong_uniforms(num_ops):
    return _CROP_UNIFORMS + 1 + 2 * num_ops + 3


def strong_view(images, uniforms, num_ops):
    """The strong view from ``[B, _strong_uniforms(num_ops)]`` uniforms (see StrongAugment).

    Geometry is resolved first, backwards from the output pixels: each RandAugment round's
    inverse map is applied to the coordinates, newest round first, and wherever a round's map
    points outside its input frame that pixel is marked as filled *at that round*.  The crop then
    maps the surviving coordinates into the source image, which is read once.  Colour ops run
    forwards, round by round, and the pixels filled at a round are set to the fill colour right
    after it -- so the fill is processed by the later colour ops exactly as in PIL.
    """
    pixels = _to_pixels(images)
    height, width = pixels.shape[1], pixels.shape[2]
    columns = _Columns(uniforms)
    box, flip = _crop_and_flip(pixels, columns)

    rounds = [draw_round(columns.take(), columns.take()) for _ in range(num_ops)]

    u, v = _pixel_grid(height, width)
    filled = [None] * num_ops
    for r in reversed(range(num_ops)):
        u, v = _apply_map(_randaugment_inverse_map(*rounds[r], height, width), u, v)
        filled[r] = ops.expand_dims(~_inside(u, v, height, width), -1)
    pixels = ops.floor(_sample_crop(pixels, u, v, box, flip) + 0.5)  # PIL's resize rounds

    pixels = _colour_rounds(pixels, rounds, filled)

    pixels = _cutout(pixels, columns.take(3))
    return _to_unit(pixels)


def draw_round(u_op, u_value):
    """One RandAugment round per image: ``(op id [B] int32, magnitude [B])`` from two uniforms.

    The op is uniform over :data:`RANDAUGMENT_OPS` (the authors' ``random.choices``), the
    magnitude uniform in that op's :data:`RANDAUGMENT_RANGES` entry.
    """
    lo = ops.convert_to_tensor([RANDAUGMENT_RANGES[n][0] for n in RANDAUGMENT_OPS])
    hi = ops.convert_to_tensor([RANDAUGMENT_RANGES[n][1] for n in RANDAUGMENT_OPS])
    op = ops.minimum(ops.cast(ops.floor(u_op * _NUM_OPS), "int32"), _NUM_OPS - 1)
    return op, _lerp(ops.take(lo, op), ops.take(hi, op), u_value)


def _colour_rounds(pixels, rounds, filled):
    """Run the rounds' colour ops in order, painting each round's uncovered pixels with the fill.

    The rounds run in a ``fori_loop`` rather than an unrolled Python loop on purpose: the loop
    boundary makes XLA materialise the image between rounds.  Unrolled, XLA's fusion recomputes
    a round's whole output inside every consumer of it in the next round (nine neighbour reads
    for Sharpness, the reductions, the table look-up...), a cost that multiplies round after
    round (measured with XLA on CPU at batch 256: 71, 200, 574 ms for 1, 2, 3 rounds unrolled;
    40 and 60 ms for 2 and 3 rounds in the loop).  XLA inlines a loop of one trip, so
    ``num_ops=1`` runs unrolled and, on CPU, is slower than ``num_ops=3``.
    """
    if not rounds:
        return pixels
    op_stack = ops.stack([op for op, _ in rounds])
    value_stack = ops.stack([value for _, value in rounds])
    carry = (pixels, op_stack, value_stack, ops.stack(filled))
    return ops.fori_loop(0, len(rounds), _one_colour_round, carry)[0]


def _one_colour_round(r, carry):
    """Loop body of :func:`_colour_rounds`: round ``r``'s colour op, then its fill.

    A module-level function with everything in the carry (no closure), so that JAX can cache the
    traced loop between eager calls instead of compiling it on every call.
    """
    pixels, op_stack, value_stack, filled_stack = carry
    op = ops.take(op_stack, r, axis=0)
    pixels = _randaugment_colour(pixels, op, ops.take(value_stack, r, axis=0))
    pixels = ops.where(ops.take(filled_stack, r, axis=0), GEOMETRY_FILL, pixels)
    return pixels, op_stack, value_stack, filled_stack


def _randaugment_colour(pixels, op, value):
    """One RandAugment round's colour op, chosen per image; geometric ops leave colour as is.

    Table ops are chosen on their ``[B, C, 256]`` tables and applied with one gather; Color and
    Sharpness, which mix channels or neighbours, are computed on the image and picked with
    ``ops.where``.
    """
    batch, channels = ops.shape(pixels)[0], pixels.shape[-1]
    index = _table_index(pixels)
    hist = _histograms(index, batch, channels)
    tables = (
        (_OP["AutoContrast"], autocontrast_table(pixels, hist)),
        (_OP["Brightness"], brightness_table(pixels, hist, value)),
        (_OP["Contrast"], contrast_table(pixels, hist, value)),
        (_OP["Equalize"], equalize_table(pixels, hist)),
        (_OP["Posterize"], posterize_table(pixels, hist, ops.clip(ops.floor(value), 1.0, 8.0))),
        (_OP["Solarize"], solarize_table(pixels, hist, value)),
    )
    pixels_out = _apply_table(index, _pick_table(op, tables, batch, channels), batch, channels)
    image_ops = (
        (_OP["Color"], color_8bit(pixels, value)),
        (_OP["Sharpness"], sharpness_8bit(pixels, value)),
    )
    return _select(op, image_ops, pixels_out)


def _pick_table(op, tables, batch, channels):
    """Per image, the table of its op, or the identity table: ``[B, C, 256]``.

    Picked with a one-hot batched matmul rather than a chain of ``ops.where``.  XLA fuses a
    chain of wheres into the per-pixel look-up that reads the result, so every pixel would
    recompute every candidate table's entry for its value -- four times more entries than the
    tables hold at 32x32 (1,024 pixels per channel, 256 levels).  A matmul is not fused into
    its consumer, so the tables are built once: at batch 128 on 2 CPU cores a round went from
    3.6 to 1.8 ms under TensorFlow and JAX alike.  The pick stays exact under any matmul
    precision (bfloat16 included): the weights are 0 or 1 and the entries integers 0..255.
    Every candidate must be finite for every image, chosen or not, as ``0 * inf`` is NaN (hence
    Posterize's bits clipped to 1..8 whatever the magnitude another op drew).
    """
    keys = [key for key, _ in tables]
    candidates = [ops.broadcast_to(_LEVELS, (batch, channels, 256))]
    candidates += [ops.broadcast_to(table, (batch, channels, 256)) for _, table in tables]
    stacked = ops.reshape(ops.stack(candidates, axis=1), (-1, len(candidates), channels * 256))
    slot = ops.zeros_like(op)
    for position, key in enumerate(keys, start=1):
        slot = ops.where(op == key, position, slot)
    picked = ops.einsum("bk,bkt->bt", ops.one_hot(slot, len(candidates)), stacked)
    return ops.reshape(picked, (-1, channels, 256))


def _cutout(pixels, u):
    """The authors' Cutout after RandAugment: a grey square of side ``U(0, 0.5) * W`` pixels.

    Mirrors ``CutoutAbs``: centre ``(x, y)`` drawn by ``np.random.uniform(w)`` -- which, having
    ``low=w, high=1``, is uniform between 1 and ``w`` --, top-left ``int(max(0, centre - v/2))``,
    bottom-right ``min(w, top-left + v)``, drawn by PIL inclusive of both corners.
    """
    height, width = pixels.shape[1], pixels.shape[2]
    side = _per_image(u[:, 0] * (CUTOUT_MAX_FRACTION * width))
    cx = _per_image(_lerp(1.0, float(width), u[:, 1]))
    cy = _per_image(_lerp(1.0, float(height), u[:, 2]))
    x0 = ops.floor(ops.maximum(cx - side / 2.0, 0.0))
    y0 = ops.floor(ops.maximum(cy - side / 2.0, 0.0))
    x1 = ops.floor(ops.minimum(x0 + side, float(width)))
    y1 = ops.floor(ops.minimum(y0 + side, float(height)))
    cols, rows = _pixel_grid(height, width)
    cols, rows = cols - 0.5, rows - 0.5
    hole = (side > 0) & (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
    color = ops.convert_to_tensor(np.array(CUTOUT_COLOR, dtype="float32"))
    return ops.where(ops.expand_dims(hole, -1), color, pixels)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def _xla_compiled(view):
    """``view`` as the layers should run it on this backend.

    On TensorFlow, the view is wrapped in a ``tf.function(jit_compile=True)`` of its own, so
    that XLA fuses it even when the training step around it is a plain TensorFlow graph (the CPU
    default, where XLA's convolutions are slower than the graph's).  As separate graph kernels
    the two views of a resnet-small batch of 128 took 111 ms on 2 CPU cores, fused 25 ms -- most
    of the full step's overhead over the bare network.  Inside an XLA-compiled step the inner
    function is simply inlined; under JAX the whole step is already one ``jax.jit``, so the view
    is returned as is.  The random draws stay outside, with the layer's seed generator, so the
    numbers drawn are the same either way.
    """
    if keras.backend.backend() != "tensorflow":
        return view
    return _tf_xla_function(view)


@functools.cache
def _tf_xla_function(view):
    """One ``tf.function`` per view for the process, so its traces and XLA builds are reused."""
    import tensorflow as tf

    return tf.function(view, jit_compile=True)


class _Augment(keras.layers.Layer):
    """Shared plumbing: float32 compute whatever the global policy, a seed generator, config."""

    def __init__(self, seed=None, **kwargs):
        # Augmentation math (hue, equalize bins, 0..255 values) wants float32 even under a
        # mixed-precision policy; the model casts the float32 output as it needs.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # No weights to create: built from the start, so `stateless_call` works before any call.
        self.built = True

    def _uniforms(self, images, count):
        return keras.random.uniform(
            (ops.shape(images)[0], count), dtype="float32", seed=self.seed_generator
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


@keras.saving.register_keras_serializable(package="ltpll")
class WeakAugment(_Augment):
    """The RECORDS weak view, batched and jit-compilable.

    ``RandomResizedCrop(scale=(0.2, 1))`` back to ``H x W`` (bilinear) + horizontal flip (p 0.5)
    + ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` (p 0.8, random order per image) + grayscale (p 0.2).
    Every parameter is drawn per image.

    Call on ``[B, H, W, 3]`` uint8 or 0..255 floats; returns float32 in ``[0, 1]``, same shape.
    It always augments (there is no ``training`` switch): call it only on training batches.
    """

    def call(self, images):
        return _xla_compiled(weak_view)(images, self._uniforms(images, _WEAK_UNIFORMS))


@keras.saving.register_keras_serializable(package="ltpll")
class StrongAugment(_Augment):
    """The RECORDS strong view, batched and jit-compilable.

    The weak view's crop and flip, then the authors' RandAugment: ``num_ops`` rounds, each image
    independently picking one of :data:`RANDAUGMENT_OPS` (uniformly, with replacement) with a
    magnitude uniform in its :data:`RANDAUGMENT_RANGES`, then Cutout (grey square, side up to
    half the width).  Uncovered areas of rotate / shear / translate are black, as in PIL.

    Call on ``[B, H, W, 3]`` uint8 or 0..255 floats; returns float32 in ``[0, 1]``, same shape.
    """

    def __init__(self, num_ops=3, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.num_ops = int(num_ops)

    def call(self, images):
        uniforms = self._uniforms(images, _strong_uniforms(self.num_ops))
        return _xla_compiled(strong_view)(images, uniforms, self.num_ops)

    def get_config(self):
        config = super().get_config()
        config["num_ops"] = self.num_ops
        return config
