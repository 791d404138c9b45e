"""Images that stay on disk: a list of files, decoded on demand at one size.

ImageNet-LT at 224 px is about 17 GB of uint8 and iNaturalist 2018 about 66 GB, so a large
training set cannot be one host array. :class:`ImageFiles` stands in for that array everywhere
the data flows (subsampling, dev hold-out, candidate files, evaluation): it has the array's
``shape``, ``dtype`` and ``len``, and indexing it with an index array gives the files of those
rows, so ``images[keep]`` works on either. The pixels are decoded only in the input pipeline
(:mod:`ltpll.data.pipeline`), a batch at a time.

Which one a split becomes is decided by :func:`choose_input`: in memory when the decoded split
fits the memory budget (CIFAR-size sets keep the fast path of one array gathered per batch),
streamed from the files otherwise; ``--stream`` / ``--in-memory`` force either.

Every image is converted to 3-channel RGB (grayscale, palette, RGBA and CMYK files alike) and
resized, without keeping the aspect ratio, to ``height x width`` (bilinear, as
``keras.utils.image_dataset_from_directory`` does by default; antialiased where the reduction is
3x or more). Large JPEGs are decoded at a
reduced DCT scale (1/2, 1/4, 1/8) first when that still leaves at least the target size, which
makes full-size photos several times cheaper to decode.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np

from ltpll.data.defaults import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MEMORY_BUDGET_GB,
    INPUT_MODES,
)
from ltpll.errors import LTPLLError

__all__ = ["DEFAULT_IMAGE_SIZE", "DEFAULT_MEMORY_BUDGET_GB", "INPUT_MODES", "ImageFiles"]

#: Files whose header sets the default size: enough to see mixed sizes, cheap on a large list.
_SIZE_PROBES = 64


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFiles:
    """An array-like ``[N, height, width, 3]`` uint8 view of image files, decoded on demand.

    Args:
        files: the N file paths (absolute, or relative to the working directory).
        height, width: the size every image is resized to.
    """

    files: np.ndarray
    height: int
    width: int

    def __post_init__(self):
        object.__setattr__(self, "files", np.asarray(self.files, dtype=object))

    dtype = np.dtype(np.uint8)
    ndim = 4

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), int(self.height), int(self.width), 3)

    @property
    def nbytes(self) -> int:
        """The bytes the decoded images would take in memory."""
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        """One decoded image for an integer; the files of those rows for a slice or array."""
        if isinstance(index, (int, np.integer)):
            return decode_file(self.files[index], self.height, self.width)
        return ImageFiles(self.files[index], self.height, self.width)

    def __array__(self, dtype=None, copy=None):
        raise LTPLLError(
            f"{len(self)} images stream from disk and are never decoded all at once; this step "
            "needs them in memory: pass --in-memory (or a larger --memory-budget)"
        )

    def decode(self, rows=None, workers=None, on_error=None) -> np.ndarray:
        """The images at ``rows`` (default: all) decoded into one uint8 array, in parallel
        (``on_error``: as for :func:`decode_files`)."""
        files = self.files if rows is None else self.files[np.asarray(rows)]
        return decode_files(files, self.height, self.width, workers=workers, on_error=on_error)


def is_streamed(images) -> bool:
    """True for images on disk (:class:`ImageFiles`), False for an in-memory array."""
    return isinstance(images, ImageFiles)


# ---------------------------------------------------------------------------------------------
# Decisions: the size, and memory or disk
# ---------------------------------------------------------------------------------------------


def header_size(file: str) -> tuple[int, int] | None:
    """``(height, width)`` from the file's header (no decoding), or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            width, height = image.size
        return height, width
    except (OSError, SyntaxError, ValueError):
        return None


def probe_sizes(files) -> list[tuple[int, int]]:
    """The header sizes of up to 64 files spread evenly over ``files`` (readable ones)."""
    if len(files) == 0:
        return []
    rows = np.unique(np.linspace(0, len(files) - 1, min(len(files), _SIZE_PROBES)).astype(int))
    sizes = [header_size(files[row]) for row in rows]
    return [size for size in sizes if size is not None]


def default_size(sizes, log=print) -> tuple[int, int] | None:
    """The size to decode to when ``--image-size`` is not given, from the files'
    :func:`probe_sizes`.

    Images that all have one size (an image folder of CIFAR) keep it: returns None. Images of
    mixed sizes (photos, ImageNet) are resized to :data:`DEFAULT_IMAGE_SIZE` square, which is
    said in one line.
    """
    distinct = sorted(set(sizes))
    if len(distinct) <= 1:
        return None
    shown = ", ".join(f"{w}x{h}" for h, w in distinct[:3])
    log(f"images differ in size ({shown}, ...): resizing to {DEFAULT_IMAGE_SIZE}x"
        f"{DEFAULT_IMAGE_SIZE} (--image-size to choose)")
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def choose_input(num_images, height, width, mode="auto", budget_gb=DEFAULT_MEMORY_BUDGET_GB):
    """``"memory"`` or ``"stream"`` for a split of ``num_images`` at ``height x width``.

    ``auto`` keeps the split in memory when its decoded bytes fit ``budget_gb`` (GiB).

    Raises:
        LTPLLError: an unknown mode or a negative budget.
    """
    if mode not in INPUT_MODES:
        raise LTPLLError(f"input mode must be one of {', '.join(INPUT_MODES)}; got {mode!r}")
    if budget_gb is None or budget_gb < 0:
        raise LTPLLError(f"--memory-budget must be >= 0 GB; received {budget_gb}")
    if mode != "auto":
        return mode
    decoded = int(num_images) * int(height) * int(width) * 3
    return "memory" if decoded <= budget_gb * 2**30 else "stream"


def format_bytes(count: float) -> str:
    """``1.5 GB``-style sizes (binary units) for log lines."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


# ---------------------------------------------------------------------------------------------
# Decoding with Pillow (the machines without TensorFlow, and the in-memory path of lists)
# ---------------------------------------------------------------------------------------------


class UnreadableImage(LTPLLError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


def decode_file(file: str, height: int | None = None, width: int | None = None) -> np.ndarray:
    """One image as uint8 ``[height, width, 3]`` RGB (any mode converted; resized if given).

    JPEGs are decoded at the smallest DCT scale that still covers the target size (Pillow's
    ``draft``), then resized bilinearly (:func:`_resize`: antialiased from a 3x reduction).

    Raises:
        UnreadableImage: naming the file.
    """
    from PIL import Image

    try:
        with Image.open(file) as image:
            if height is not None and image.format == "JPEG":
                image.draft("RGB", (int(width), int(height)))
            image = image.convert("RGB")
            if height is not None and image.size != (int(width), int(height)):
                image = _resize(image, int(height), int(width))
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"cannot read image {file}: {error}") from None


#: A reduction at least this large (in either side) is antialiased; below it the resize is
#: plain bilinear, 2.5x faster in tf.data at 500x375 -> 224 (``make bench-scale-cpu``).
ANTIALIAS_FROM = 3.0


def _resize(image, height, width):
    """Bilinear resize as :func:`ltpll.data.pipeline.decode_image_tf` does it, so the machines
    without TensorFlow see the same pixels (to rounding): antialiased from a 3x reduction on,
    else plain bilinear sampling at the output pixels' centres (Pillow's ``resize`` would
    antialias any reduction)."""
    from PIL import Image

    source_width, source_height = image.size
    if source_width >= ANTIALIAS_FROM * width or source_height >= ANTIALIAS_FROM * height:
        return image.resize((width, height), Image.Resampling.BILINEAR)
    scale = (source_width / width, 0, 0, 0, source_height / height, 0)
    return image.transform((width, height), Image.Transform.AFFINE, scale,
                           resample=Image.Resampling.BILINEAR)


def decode_files(files, height, width, workers=None, on_error=None) -> np.ndarray:
    """Decodes ``files`` into one uint8 ``[N, height, width, 3]`` array with a thread pool.

    Pillow releases the GIL while it decodes and resizes, so threads use every core.

    Args:
        on_error: ``on_error(row, error)`` for an unreadable file, whose row is then left
            black; None raises :class:`UnreadableImage` instead.
    """
    images = np.zeros((len(files), int(height), int(width), 3), dtype=np.uint8)

    def one(row):
        try:
            images[row] = decode_file(files[row], height, width)
        except UnreadableImage as error:
            if on_error is None:
                raise
            on_error(row, error)

    workers = workers or min(32, (os.cpu_count() or 1) + 2)
    if len(files) <= 1 or workers == 1:
        for row in range(len(files)):
            one(row)
        return images
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(one, row) for row in range(len(files))]:
            future.result()
    return images
