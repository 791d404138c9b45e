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
