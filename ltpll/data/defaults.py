"""Defaults of reading images that the CLI shows in ``--help``: kept free of imports (no numpy),
so ``ltpll --help`` stays instant."""

#: The side images of mixed sizes are resized to when ``--image-size`` is not given: the input
#: size of every ImageNet-pretrained backbone.
DEFAULT_IMAGE_SIZE = 224
#: Decoded GiB of a split above which it streams from disk unless ``--in-memory`` is given.
#: Below the 2 GB a TensorFlow graph constant can hold, and small beside any machine that
#: trains on it; CIFAR-10 (150 MB) and CIFAR-100 fit, ImageNet-LT (17 GB at 224 px) does not.
DEFAULT_MEMORY_BUDGET_GB = 1.5
INPUT_MODES = ("auto", "stream", "memory")
#: How generated candidate sets are drawn (``--candidate-model``): ``uniform``, ``nu`` (the
#: RECORDS paper's CIFAR-100-LT-NU) or ``h`` (PiCO's CIFAR-100-H); :mod:`ltpll.data.candidates`.
CANDIDATE_MODELS = ("uniform", "nu", "h")
#: Under ``nu``, how many times likelier a label of the true label's superclass joins the set
#: than any other label: the RECORDS authors' 8.
DEFAULT_SUPERCLASS_RATIO = 8.0
