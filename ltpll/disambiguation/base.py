"""The interface every PLL disambiguation method implements.

A method is a strategy, not a model: :class:`~ltpll.models.pll_model.PLLModel` owns the training
step (augmentation, forward pass, the confidence table, rebalancing, mixup) and asks the method
two things:

* ``loss``: the training loss of the augmented view(s) given the current confidence targets;
* ``update``: the new confidence rows, from the (debiased) logits of the view(s), restricted to
  each sample's original candidate set.

``loss`` is the batch mean of ``example_losses``, each sample's own loss: the loss weightings
(class-balanced, focal, LDAM-DRW, meta-learned; :mod:`ltpll.weighting`) weight those
per sample, so every weighting composes with every method.

Methods declare how many augmented views they use (``views``: CORR uses a weak and a strong view,
PRODEN, LW and CAVL one); the model then skips the strong view's forward pass for one-view
methods, and passes ``None`` for the strong view's logits.

A method whose loss is driven by this step's own disambiguation rather than by the table's memory
sets ``step_targets = True`` (CC): the model then passes ``update`` of the batch's (debiased)
logits, without gradient, as ``targets``; the table is still written as for any method.

A method that needs more than a per-sample loss and an update (SoLar, HTC) uses the optional
hooks below; their defaults change nothing, so CORR, PRODEN, LW, CAVL and CC never see them:

* ``build(model)``: creates the method's own state (a queue, a class-marginal estimate, extra
  heads) as one Keras layer and returns it; the model keeps it as ``model.method_state``, so its
  variables are the model's (saved, checkpointed, written inside the compiled step like the
  confidence table). Default: ``None``, nothing.
* ``step_loss(step)``: the step's whole scalar loss from a :class:`~ltpll.models.pll_model.
  TrainingStep` (the ``y_pred`` dict of logits, features and normalised views, the table's
  targets, the candidates, the sample index, a forward pass for extra views); ``None`` (default)
  keeps the model's own loss (``example_losses`` weighted, plus the model's Mixup term). A method
  that builds its own Mixup term sets ``owns_mixup = True`` and the model's mixed views are not
  made. Variable writes happen only when ``step.training``.
* ``callbacks()``: Keras callbacks the method needs during ``fit`` (per-epoch schedules).
* ``prediction_logits(logits, features)``: the logits prediction starts from (HTC's ensemble);
  default: the model head's ``logits``.

Methods are plain Python objects with a ``get_config`` so a saved model knows which one it ran
and with which options. Their options are declared with their registration in
:mod:`ltpll.components` (type, default, check, help); the constructor takes them as keywords and
hands them to :meth:`DisambiguationMethod.set_options`, which checks them against that
declaration and keeps them for ``get_config``.
"""

from keras import ops

from ltpll import components
from ltpll.errors import LTPLLError

# Stands in for -inf in masked softmaxes: finite, so gradients and XLA stay NaN-free.
_MASKED = -1e30


class DisambiguationMethod:
    """Base class: subclasses set ``name`` and ``views`` and implement ``example_losses`` and
    ``update``; a method with options passes them to :meth:`set_options` in its constructor."""

    name = None
    views = 2
    # True: the loss's targets are this step's update rows, not the table's (see the docstring).
    step_targets = False
    # True: step_loss makes the Mixup term itself; the model then makes no mixed views.
    owns_mixup = False
    _option_keys = ()

    def set_options(self, **options):
        """Checks ``options`` against the method's registered declaration (a class that is not
        registered keeps them as given) and stores each as an attribute of the same name.

        Raises:
            LTPLLError: for an option the declaration does not have or a bad value.
        """
        try:
            declaration = components.get("method", self.name)
        except LTPLLError:
            declaration = None
        if declaration is not None:
            options = declaration.resolve(options)
            options.pop("name")
        for key, value in options.items():
            setattr(self, key, value)
        self._option_keys = tuple(options)

    def loss(self, logits_w, logits_s, targets, candidates):
        """Scalar training loss: the batch mean of :meth:`example_losses`."""
        return ops.mean(self.example_losses(logits_w, logits_s, targets, candidates))

    def example_losses(self, logits_w, logits_s, targets, candidates):
        """``[B]`` training loss of each sample.

        Args:
            logits_w: ``[B, C]`` float32 logits of the weakly augmented view.
            logits_s: ``[B, C]`` logits of the strongly augmented view (``None`` when
                ``views == 1``).
            targets: ``[B, C]`` current confidence rows (each sums to 1 over its candidates).
            candidates: ``[B, C]`` multi-hot candidate sets (for mixup samples: the union of the
                two mixed samples' sets).
        """
        raise NotImplementedError

    def update(self, logits_w, logits_s, candidates):
        """New ``[B, C]`` confidence rows, zero outside the candidate set and summing to 1.

        Args:
            logits_w, logits_s: debiased float32 logits (``logits - log prior`` under RECORDS)
                of the views, without gradient; ``logits_s`` is ``None`` when ``views == 1``.
            candidates: ``[B, C]`` multi-hot original candidate sets.
        """
        raise NotImplementedError

    # --- optional hooks (see the module docstring); the defaults keep the model's own step ---

    def build(self, model):
        """The method's own state as a Keras layer (``None``: it has none)."""

    def step_loss(self, step):
        """The step's scalar loss, or ``None`` for the model's default loss."""

    def callbacks(self):
        """Keras callbacks the method needs during ``fit``."""
        return []

    def prediction_logits(self, logits, features):
        """``[B, C]`` logits the model predicts from (before the rebalancer's debiasing)."""
        return logits

    def get_config(self):
        """The method's name and options; ``get_method(config)`` rebuilds it."""
        return {"name": self.name, **{key: getattr(self, key) for key in self._option_keys}}


def normalise_over_candidates(log_scores, candidates):
    """Softmax of ``log_scores`` over each row's candidate set (zero elsewhere).

    Working from log scores keeps tiny probabilities from underflowing to an all-zero row, which a
    product of probabilities divided by its sum can do with many classes.
    """
    masked = ops.where(candidates > 0, log_scores, ops.full_like(log_scores, _MASKED))
    return ops.softmax(masked, axis=-1) * ops.cast(candidates > 0, log_scores.dtype)


def cross_entropy_to_targets(logits, targets):
    """``[B]`` cross-entropies ``-sum_j target_j log softmax(logits)_j``."""
    return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)
