"""Where images come from: tensorflow-datasets, an image folder, a .tar.gz of one, or the sample.

Every source ends as an :class:`ImageSet` of in-memory uint8 arrays: CIFAR-sized datasets fit in
memory many times over, and the long-tail subsampling and candidate generation that follow need
random access to labels anyway.

Image folders follow the tensorflow-datasets layout ``<root>/<split>/<class>/<image>`` and are
read through ``tfds.folder_dataset.ImageFolder`` when TensorFlow is installed, or decoded with
Pillow when it is not (the JAX-only GPU machine). Both decoders give bit-identical pixels (JPEGs
are decoded with the accurate integer DCT, which is what Pillow's libjpeg uses, and any resizing is
done by Pillow), so a model trained on one machine sees the same data on the other. TensorFlow is
imported only inside the functions that need it.

Decoding 50,000 JPEGs takes seconds, so decoded arrays are cached as ``.npz`` files under the
cache directory (``$XDG_CACHE_HOME/ltpll``, default ``~/.cache/ltpll``), keyed by the folder, the
split, the image size and every image's size and mtime, and written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import hashlib
import logging
import os
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ltpll.data import lists
from ltpll.data.files import (
    DEFAULT_MEMORY_BUDGET_GB,
    ImageFiles,
    UnreadableImage,
    choose_input,
    decode_files,
    default_size,
    format_bytes,
    probe_sizes,
)
from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_directory, atomic_path

logger = logging.getLogger(__name__)

TFDS_DATASETS = ("cifar10", "cifar100")
SAMPLE = "sample"
SAMPLE_ARCHIVE = Path(__file__).resolve().parent.parent / "sample" / "cifar10_sample.tar.gz"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # what tfds' ImageFolder lists
CACHE_FORMAT = 2  # bump when the decoded arrays would change for the same files (2: skipped)
_TF_BATCH = 1024


@dataclasses.dataclass
class ImageSet:
    """One split of a dataset: its images in memory or on disk, and their labels.

    Attributes:
        images: uint8 [N, H, W, 3]: an array in memory, or the
            :class:`~ltpll.data.files.ImageFiles` of a split streamed from disk.
        labels: int64 [N] class ids (indices into ``class_names``).
        class_names: the class names; for folders sorted, and those of the train split.
        paths: a stable id per image, used by candidate files: the path relative to the split
            folder for folders (``cat/0001.jpg``), ``<split>/<index>`` for tfds datasets.
        superclass_of: ``superclass_of[c]`` is class ``c``'s superclass, where the dataset has
            them (CIFAR-100), else None.
        skipped: paths of the folder's images that could not be decoded (corrupt, truncated)
            and were left out.
        image_size: the square size the images were resized to; None where they keep their
            own size.
        class_ids: a list split's own label ids, in label order (label ``c`` is id
            ``class_ids[c]`` of the list file); None for folders and tfds.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    paths: list[str]
    superclass_of: np.ndarray | None = None
    skipped: list[str] = dataclasses.field(default_factory=list)
    image_size: int | None = None
    class_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, indices) -> ImageSet:
        """The samples at ``indices`` (e.g. a long-tailed subsample), paths and labels too."""
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            images=self.images[indices],
            labels=self.labels[indices],
            class_names=list(self.class_names),
            paths=[self.paths[i] for i in indices],
            superclass_of=self.superclass_of,
            image_size=self.image_size,
            class_ids=self.class_ids,
        )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ltpll``, or ``~/.cache/ltpll``: never inside the repository or the data."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ltpll"


def load_split(
    dataset: str,
    split: str,
    image_size: int | None = None,
    cache_dir: str | None = None,
    strict: bool = False,
    input_mode: str = "auto",
    memory_budget: float = DEFAULT_MEMORY_BUDGET_GB,
    classes: ImageSet | None = None,
    log=None,
) -> ImageSet:
    """Load one split of a dataset into memory.

    Args:
        dataset: ``"cifar10"`` or ``"cifar100"`` (through tensorflow-datasets, which downloads
            them on first use), ``"sample"`` (the small CIFAR-10 sample shipped with ltpll), a
            folder ``<root>/<split>/<class>/<image>``, or a ``.tar.gz``/``.tgz`` of such a folder.
        split: ``"train"``, ``"test"``, ...: a tfds split, or a folder under the root.
        image_size: resize every image to ``image_size x image_size``; None keeps the size,
            which must then be the same for all images.
        cache_dir: where archives are extracted and decoded arrays cached; defaults to
            :func:`default_cache_dir`.
        strict: fail on an image file that cannot be decoded (corrupt, truncated) instead of
            leaving it out (its path is then listed in ``ImageSet.skipped``).
        input_mode: ``auto`` keeps a folder or list split in memory when its decoded images fit
            ``memory_budget`` GiB and streams it from disk (``ImageSet.images`` an
            :class:`~ltpll.data.files.ImageFiles`) otherwise; ``memory`` / ``stream`` force
            either. tensorflow-datasets splits are always in memory.
        classes: the training split, whose classes a list split's label ids must be among.
        log: where the one-line decisions go (the default size, streaming); None: nowhere.

    Returns:
        An :class:`ImageSet`.

    Raises:
        LTPLLError: an unknown dataset or missing path, a missing split or list file, a folder
            without (readable) images, an unreadable image with ``strict`` (named), images of a
            size the default-size probe missed, test classes the train split does not have, or
            a tfds dataset that cannot be downloaded.

    Example:
        >>> train = load_split("sample", "train")
        >>> train.images.shape, train.class_names[:2]
        ((5000, 32, 32, 3), ['airplane', 'automobile'])
    """
    _check_image_size(image_size)
    image_size = None if image_size is None else int(image_size)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if dataset in TFDS_DATASETS:
        return _load_tfds(dataset, split, image_size)
    if dataset == SAMPLE:
        if not SAMPLE_ARCHIVE.is_file():
            raise LTPLLError(f"the packaged sample {SAMPLE_ARCHIVE} is missing; reinstall ltpll")
        return _load_archive(SAMPLE_ARCHIVE, split, image_size, cache, strict,
                             _InputChoice("memory", memory_budget, lambda _message: None))
    dataset, split = lists.dataset_spec(dataset, split)
    decide = _InputChoice(input_mode, memory_budget, log or (lambda _message: None))
    path = Path(dataset).expanduser()
    if path.is_dir() and lists.is_list_split(path, split):
        return _load_list(path, split, image_size, decide, strict, classes)
    if path.is_dir():
        return _load_folder(path, split, image_size, cache, strict=strict, decide=decide)
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        return _load_archive(path, split, image_size, cache, strict, decide)
    if path.exists():
        raise LTPLLError(f"{dataset} is neither an image folder nor a .tar.gz/.tgz of one")
    raise LTPLLError(
        f"no dataset {dataset!r}: not {', '.join(TFDS_DATASETS)} or {SAMPLE}, "
        "and no such folder or .tar.gz file"
    )


def _check_image_size(image_size) -> None:
    valid = isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool)
    if image_size is not None and not (valid and image_size > 0):
        raise LTPLLError(f"image size must be a positive integer; got {image_size!r}")


# --------------------------------------------------------------------------------------------
# tensorflow-datasets
# --------------------------------------------------------------------------------------------


def _load_tfds(name: str, split: str, image_size: int | None) -> ImageSet:
    """CIFAR-10/100 through tfds; the first use downloads them (needs the internet)."""
    offline_hint = (
        "without internet access pass an image folder or a .tar.gz of one as the dataset "
        f"instead (<root>/<split>/<class>/<image>), or '{SAMPLE}' for ltpll's bundled demo sample"
    )
    try:
        import tensorflow_datasets as tfds

        data, info = tfds.load(name, split=split, batch_size=-1, with_info=True)
        data = tfds.as_numpy(data)
    except Exception as error:  # tfds raises many types offline (DownloadError, ImportError, ...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise LTPLLError(
            f"could not load {name!r} split {split!r} through tensorflow-datasets "
            f"({type(error).__name__}: {reason[:200]}); {offline_hint}"
        ) from error
    images = _resize_all(data["image"], image_size)
    labels = data["label"].astype(np.int64)
    class_names = list(info.features["label"].names)
    superclass_of = None
    if "coarse_label" in data:
        superclass_of = _superclass_table(labels, data["coarse_label"], len(class_names))
    paths = [f"{split}/{i}" for i in range(len(labels))]
    return ImageSet(images, labels, class_names, paths, superclass_of)


def _superclass_table(labels: np.ndarray, coarse: np.ndarray, num_classes: int) -> np.ndarray:
    """Fine -> coarse table from per-image labels (classes missing from the split: CIFAR-100's)."""
    from ltpll.data.candidates import CIFAR100_SUPERCLASS_OF

    table = CIFAR100_SUPERCLASS_OF.copy() if num_classes == 100 else np.full(num_classes, -1)
    table[labels] = np.asarray(coarse, dtype=np.int64)
    return table.astype(np.int64)


def _resize_all(images: np.ndarray, image_size: int | None) -> np.ndarray:
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    return np.stack([_resize(image, image_size) for image in images])


def _resize(image: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinear resize with Pillow: one implementation for every decoder, so pixels agree."""
    from PIL import Image

    resized = Image.fromarray(image).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------


def _load_archive(
    archive: Path, split: str, image_size: int | None, cache: Path, strict: bool, decide
) -> ImageSet:
    extracted = _extract_once(archive, cache)
    return _load_folder(
        _archive_root(extracted, split), split, image_size, cache, source=archive, strict=strict,
        decide=decide,
    )


def _extract_once(archive: Path, cache: Path) -> Path:
    """Extract ``archive`` to ``<cache>/<name>-<hash>/`` unless that is already there.

    The hash covers the archive's path, size and mtime, so a replaced archive is extracted
    afresh. Extraction goes to a temporary folder renamed into place at the end: a crash or a
    concurrent run never leaves a half-extracted folder that would be taken for a complete one.
    """
    stat = archive.stat()
    key = _short_hash(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    target = cache / f"{_archive_stem(archive)}-{key}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("extracting %s to %s (once)", archive, target)
    try:
        with atomic_directory(target) as scratch, tarfile.open(archive, "r:*") as tar:
            _extract_all(tar, Path(scratch))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        if target.is_dir():  # another process finished the same extraction first
            return target
        raise LTPLLError(f"cannot extract {archive}: {error}") from error
    return target


def _extract_all(tar: tarfile.TarFile, destination: Path) -> None:
    """Extract, refusing members that would land outside ``destination`` (``..``, links, ...)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(destination, filter="data")
        return
    for member in tar.getmembers():  # Python < 3.11.4: the same check by hand
        target = (destination / member.name).resolve()
        if destination.resolve() not in target.parents or member.issym() or member.islnk():
            raise LTPLLError(f"refusing to extract unsafe archive member {member.name!r}")
    tar.extractall(destination)


def _archive_stem(archive: Path) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if archive.name.endswith(suffix):
            return archive.name[: -len(suffix)]
    return archive.stem


def _archive_root(extracted: Path, split: str) -> Path:
    """The dataset root inside an extracted archive: its top, or its single top-level folder."""
    if (extracted / split).is_dir():
        return extracted
    folders = [child for child in extracted.iterdir() if child.is_dir()]
    if len(folders) == 1 and (folders[0] / split).is_dir():
        return folders[0]
    return extracted


# --------------------------------------------------------------------------------------------
# Memory or disk; the default size
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _InputChoice:
    """How a folder or list split is read: ``--stream`` / ``--in-memory`` / the budget."""

    input_mode: str
    memory_budget: float
    log: object

    def size(self, files, image_size):
        """``(image_size, (H, W, 3))``: the size asked for, or the default for these files."""
        if image_size is not None:
            return image_size, (image_size, image_size, 3)
        sizes = probe_sizes(files)
        square = default_size(sizes, self.log)
        if square is not None:
            return square[0], (*square, 3)
        if not sizes:
            return None, _target_shape(files, None)  # names the unreadable file
        return None, (*sizes[0], 3)

    def mode(self, count, shape, where):
        """``"memory"`` or ``"stream"``, said in one line when it streams."""
        mode = choose_input(count, shape[0], shape[1], self.input_mode, self.memory_budget)
        if mode == "stream":
            decoded = format_bytes(count * shape[0] * shape[1] * 3)
            why = ("--stream" if self.input_mode == "stream"
                   else f"above --memory-budget {self.memory_budget:g} GB")
            self.log(f"{where}: streaming {count} images from disk ({decoded} decoded, {why})")
        return mode


def _load_list(root: Path, split: str, image_size, decide, strict, classes) -> ImageSet:
    """A split listed in a text or COCO-style JSON file (:mod:`ltpll.data.lists`)."""
    known = None
    if classes is not None and classes.class_ids is not None:
        known = (classes.class_ids, classes.class_names)
    listing = lists.read_list(root, split, known)
    missing = [path for path in listing.files[:: max(1, len(listing.files) // 64)]
               if not os.path.isfile(path)]
    if missing:
        raise LTPLLError(f"{split} lists images that do not exist under {root}, e.g. "
                         f"{missing[0]}")
    where = f"{root}/{split}"
    image_size, shape = decide.size(listing.files, image_size)
    fields = dict(image_size=image_size, class_ids=listing.class_ids)
    if decide.mode(len(listing.files), shape, where) == "stream":
        return ImageSet(ImageFiles(listing.files, *shape[:2]), listing.labels,
                        listing.class_names, listing.paths, **fields)
    unreadable = {}
    decoded = decode_files(listing.files, *shape[:2],
                           on_error=lambda row, error: unreadable.setdefault(row, str(error)))
    image_set = _readable(decoded, unreadable, listing.labels, listing.class_names,
                          listing.paths, where, **fields)
    _refuse_skipped(image_set, where, strict)
    return image_set


def _readable(images, unreadable, labels, class_names, paths, where, **fields) -> ImageSet:
    """The decoded images but those of ``unreadable`` (``{row: reason}``), whose paths become
    ``ImageSet.skipped``.

    Raises:
        LTPLLError: if none could be decoded.
    """
    keep = np.ones(len(paths), dtype=bool)
    keep[list(unreadable)] = False
    if not keep.any():
        raise LTPLLError(f"none of the {len(keep)} images in {where} can be decoded, e.g. "
                         f"{next(iter(unreadable.values()))}")
    return ImageSet(images[keep], labels[keep], class_names,
                    [p for p, k in zip(paths, keep) if k],
                    skipped=[paths[row] for row in sorted(unreadable)], **fields)


def _refuse_skipped(image_set, where, strict):
    """Under ``--strict``, a split with undecodable images is an error naming the first."""
    if strict and image_set.skipped:
        raise LTPLLError(
            f"{len(image_set.skipped)} image(s) in {where} cannot be decoded "
            f"(corrupt or truncated), e.g. {image_set.skipped[0]}; without --strict they are "
            "skipped"
        )


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Listing:
    """The images of one split, in a stable order (class, then file name)."""

    root: Path
    split: str
    class_names: list[str]
    files: list[str]  # absolute, as tfds' ImageFolder names them
    paths: list[str]  # relative to the split folder, posix
    labels: np.ndarray
    signature: str  # changes when any image is added, removed, resized or touched


def _load_folder(
    root: Path,
    split: str,
    image_size: int | None,
    cache: Path,
    source: Path | None = None,
    strict: bool = False,
    decide=None,
) -> ImageSet:
    listing = _list_split(root.resolve(), split, source or root)
    where = f"{source or root}/{split}"
    decide = decide or _InputChoice("memory", DEFAULT_MEMORY_BUDGET_GB, lambda _message: None)
    image_size, shape = decide.size(listing.files, image_size)
    if decide.mode(len(listing.files), shape, where) == "stream":
        return ImageSet(ImageFiles(listing.files, *shape[:2]), listing.labels,
                        listing.class_names, listing.paths, image_size=image_size)
    cache_file = _cache_file(cache, listing, image_size)
    image_set = _read_cache(cache_file, listing)
    if image_set is None:
        images, unreadable = _decode_images(listing, image_size)
        image_set = _readable(images, unreadable, listing.labels, listing.class_names,
                              listing.paths, where)
        _write_cache(cache_file, image_set)
    image_set.image_size = image_size
    _refuse_skipped(image_set, where, strict)
    return image_set


def _list_split(root: Path, split: str, source: Path) -> _Listing:
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(child.name for child in _subfolders(root))
        raise LTPLLError(
            f"{source} has no '{split}' split folder (expected <root>/{split}/<class>/<image>); "
            f"found folders: {', '.join(found) or 'none'}"
        )
    class_names = _class_names(root, split, source)
    files, paths, labels, stats = [], [], [], []
    for label, class_name in enumerate(class_names):
        for entry in _image_entries(split_dir / class_name):
            files.append(os.path.join(str(root), split, class_name, entry.name))
            paths.append(f"{class_name}/{entry.name}")
            labels.append(label)
            stat = entry.stat()
            stats.append(f"{paths[-1]}|{stat.st_size}|{stat.st_mtime_ns}")
    if not files:
        raise LTPLLError(
            f"no images ({'/'.join(IMAGE_EXTENSIONS)}) in {source}/{split}/<class>/; "
            "expected <root>/<split>/<class>/<image>"
        )
    signature = _short_hash("\n".join([*class_names, *stats]), length=16)
    return _Listing(root, split, class_names, files, paths, np.array(labels, np.int64), signature)


def _class_names(root: Path, split: str, source: Path) -> list[str]:
    """Sorted class folders of the train split; other splits must not add classes.

    Label ids must mean the same class in every split, so a test split reuses the train split's
    list even where it lacks some class.
    """
    own = sorted(folder.name for folder in _subfolders(root / split))
    if split == "train" or not (root / "train").is_dir():
        return own
    train = sorted(folder.name for folder in _subfolders(root / "train"))
    unknown = [name for name in own if name not in train]
    if unknown:
        raise LTPLLError(
            f"{source}: the '{split}' split has class folder(s) the train split lacks: "
            f"{', '.join(unknown)}"
        )
    return train


def _subfolders(directory: Path) -> list[Path]:
    children = directory.iterdir()
    return [child for child in children if child.is_dir() and not child.name.startswith(".")]


def _image_entries(class_dir: Path) -> list[os.DirEntry]:
    if not class_dir.is_dir():
        return []
    with os.scandir(class_dir) as entries:
        images = [
            entry
            for entry in entries
            if entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file()
        ]
    return sorted(images, key=lambda entry: entry.name)


def _short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:length]


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _tensorflow_available() -> bool:
    """True where TensorFlow and tensorflow-datasets import (not on the JAX-only GPU machine).

    Tried only when there are images to decode, so a cache hit never pays for importing them.
    """
    try:
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


def _decode_images(listing: _Listing, image_size: int | None) -> tuple[np.ndarray, dict]:
    """Decode every image of the listing to uint8 [N, H, W, 3], in listing order.

    Returns:
        The images (rows of unreadable files left zero) and ``{row: reason}`` of the files that
        could not be decoded.
    """
    shape = _target_shape(listing.files, image_size)
    images = np.zeros((len(listing.files), *shape), dtype=np.uint8)
    done = np.zeros(len(listing.files), dtype=bool)
    if _tensorflow_available():
        _decode_with_tfds(listing, shape, images, done)
    # Whatever the fast path did not fill (no TensorFlow; images to resize; the rest of a batch
    # with a corrupt file) goes through Pillow, which names each unreadable file.
    unreadable = {}
    for row in np.flatnonzero(~done):
        try:
            images[row] = _pillow_image(listing.files[row], shape, image_size)
        except UnreadableImage as error:
            unreadable[int(row)] = str(error)
    return images, unreadable


def _target_shape(files: list[str], image_size: int | None) -> tuple[int, int, int]:
    """The common image shape: ``image_size`` square, else the first readable file's size."""
    if image_size is not None:
        return (image_size, image_size, 3)
    from PIL import Image

    first_error = None
    for file in files:
        try:
            with Image.open(file) as image:  # reads only the header
                width, height = image.size
            return (height, width, 3)
        except (OSError, SyntaxError, ValueError) as error:
            first_error = first_error or f"cannot read image {file}: {error}"
    raise LTPLLError(first_error)


def _pillow_image(file: str, shape: tuple[int, int, int], image_size: int | None) -> np.ndarray:
    """Decode with Pillow; resize to ``image_size`` if given, else insist on ``shape``."""
    array = _open_rgb(file)
    if array.shape == shape:
        return array
    if image_size is not None:
        return _resize(array, image_size)
    raise LTPLLError(
        f"images differ in size: {file} is {array.shape[1]}x{array.shape[0]}, the first image "
        f"{shape[1]}x{shape[0]}; pass --image-size to resize them all"
    )


def _open_rgb(file: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"cannot read image {file}: {error}") from None


def _decode_with_tfds(listing: _Listing, shape, images: np.ndarray, done: np.ndarray) -> None:
    """Decode, in parallel and batched, the images that already have ``shape``.

    Reads the files through ``tfds.folder_dataset.ImageFolder`` (its own decoding skipped, to pick
    the JPEG DCT that matches Pillow), and fills ``images``/``done`` in listing order. Images of
    another size are left for :func:`_pillow_image` to resize or report.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    with _no_tfds_tempdir_leak():
        builder = tfds.folder_dataset.ImageFolder(str(listing.root))
    dataset = builder.as_dataset(
        split=listing.split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
    )
    dataset = dataset.map(
        functools.partial(_tf_decode, shape=shape), num_parallel_calls=tf.data.AUTOTUNE
    )
    row_of = {file: row for row, file in enumerate(listing.files)}
    try:
        for batch, fits, files in dataset.batch(_TF_BATCH).prefetch(2).as_numpy_iterator():
            rows = np.array([row_of.get(os.fsdecode(file), -1) for file in files])
            keep = fits & (rows >= 0)
            images[rows[keep]] = batch[keep]
            done[rows[keep]] = True
    except tf.errors.OpError:
        # A corrupt file stops the batched decoder; the rows not yet filled go through Pillow,
        # which names (and skips, or with --strict reports) the bad file.
        pass


@contextlib.contextmanager
def _no_tfds_tempdir_leak():
    """Remove the empty ``/tmp/tmp*tfds`` folder each tfds builder leaves behind.

    tfds 4.9's ``DatasetInfo.initialize_from_bucket`` calls ``tempfile.mkdtemp("tfds")`` before it
    finds GCS disabled and returns, so every ImageFolder leaks an empty folder. Only folders that
    appeared during the block and are still empty are removed (``rmdir`` refuses anything else).
    """
    pattern = os.path.join(tempfile.gettempdir(), "tmp*tfds")
    before = set(glob.glob(pattern))
    try:
        yield
    finally:
        for leaked in set(glob.glob(pattern)) - before:
            try:
                os.rmdir(leaked)
            except OSError:
                pass


def _tf_decode(example, shape):
    """Decode one image; JPEGs with the accurate integer DCT, which matches Pillow exactly."""
    import tensorflow as tf

    data = example["image"]
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    fits = tf.reduce_all(tf.shape(image) == tf.constant(shape))
    image = tf.cond(fits, lambda: tf.reshape(image, shape), lambda: tf.zeros(shape, tf.uint8))
    return image, fits, example["image/filename"]


# --------------------------------------------------------------------------------------------
# Decoded-array cache
# --------------------------------------------------------------------------------------------


def _cache_file(cache: Path, listing: _Listing, image_size: int | None) -> Path:
    """``<cache>/decoded/<folder>-<hash of its path>-<split>-<size>-<hash of its files>.npz``."""
    size = f"{image_size}px" if image_size else "native"
    prefix = f"{listing.root.name}-{_short_hash(str(listing.root), 8)}-{listing.split}-{size}"
    return cache / "decoded" / f"{prefix}-v{CACHE_FORMAT}-{listing.signature}.npz"


def _read_cache(cache_file: Path, listing: _Listing) -> ImageSet | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as stored:
            paths = stored["paths"].tolist()
            class_names = stored["class_names"].tolist()
            skipped = stored["skipped"].tolist()
            left_out = set(skipped)
            if ([p for p in listing.paths if p not in left_out] != paths
                    or class_names != listing.class_names):
                return None
            return ImageSet(stored["images"], stored["labels"], class_names, paths,
                            skipped=skipped)
    except (OSError, ValueError, KeyError, zlib.error) as error:  # unreadable: decode afresh
        logger.warning("ignoring unreadable cache %s: %s", cache_file, error)
        return None


def _write_cache(cache_file: Path, image_set: ImageSet) -> None:
    """Write the arrays atomically, then drop older caches of the same folder/split/size."""
    try:
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                images=image_set.images,
                labels=image_set.labels,
                class_names=np.array(image_set.class_names, dtype=str),
                paths=np.array(image_set.paths, dtype=str),
                skipped=np.array(image_set.skipped, dtype=str),
            )
    except OSError as error:  # a read-only or full cache only costs speed
        logger.warning("could not write cache %s: %s", cache_file, error)
        return
    prefix = cache_file.name.rsplit("-", 1)[0] + "-"
    for stale in cache_file.parent.iterdir():
        if stale.name.startswith(prefix) and stale.suffix == ".npz" and stale != cache_file:
            stale.unlink(missing_ok=True)
