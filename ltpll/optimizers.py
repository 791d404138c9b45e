"""The optimizer of a run: SGD with momentum, the backbone's learning rate scaled if asked.

``--backbone-lr-scale s`` trains the backbone at ``s`` times the learning rate of the rest of
the model (the head, a cosine head's scale...): ``0.1`` fine-tunes a pretrained backbone gently,
``0`` freezes it. Keras 3 has no per-variable learning rate, so :class:`BackboneScaledSGD`
scales the backbone's gradients instead, which for this optimizer is the same thing (see its
docstring). ``s = 0`` needs no optimizer of its own: the backbone is made non-trainable
(:func:`freeze_backbone`), so no gradient is computed for it and its BatchNormalization layers
run in inference mode (their moving statistics stay as they are).
"""

import keras

from ltpll.errors import LTPLLError


@keras.saving.register_keras_serializable(package="ltpll")
class BackboneScaledSGD(keras.optimizers.SGD):
    """SGD (with momentum) whose updates of the backbone's variables are scaled by
    ``backbone_lr_scale``: the backbone trains at ``backbone_lr_scale * learning_rate``.

    The gradients of the backbone's variables are multiplied by the scale in :meth:`apply`,
    before the SGD update. That is exactly a learning rate scaled for them: the momentum buffer
    ``m <- momentum * m - lr * g`` is linear in ``g`` and starts at zero, so scaling every
    ``g`` of a variable by ``s`` scales its buffer and so each of its updates by ``s`` (Nesterov
    too); and ltpll's weight decay is coupled L2 inside the loss, whose gradient is part of
    ``g`` (decoupled decay, ``clipnorm`` or ``global_clipnorm`` would break the identity: this
    optimizer does not take them).

    Which variables are the backbone's, the model says when it is compiled
    (:meth:`set_backbone_variables`; :meth:`PLLModel.compile
    <ltpll.models.pll_model.PLLModel.compile>` calls it, also when a saved model is reloaded
    and recompiled from its config). It works in TensorFlow's and JAX's train steps alike:
    JAX's ``stateless_apply`` calls :meth:`apply` without variables, which then are the ones
    the optimizer was built on.

    Args:
        learning_rate, momentum, nesterov: as ``keras.optimizers.SGD``.
        backbone_lr_scale: ``> 0``; ``1`` is plain SGD (for ``0``, freeze the backbone).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, backbone_lr_scale=1.0,
                 **kwargs):
        for clip in ("clipnorm", "global_clipnorm", "weight_decay"):
            if kwargs.get(clip) is not None:
                raise LTPLLError(f"BackboneScaledSGD does not take {clip} (the gradient scale "
                                 "would no longer be a learning-rate scale)")
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         **kwargs)
        if not backbone_lr_scale > 0:
            raise LTPLLError(f"--backbone-lr-scale must be > 0 here (0 freezes the backbone "
                             f"instead); received {backbone_lr_scale}")
        self.backbone_lr_scale = float(backbone_lr_scale)
        self._backbone_keys = frozenset()

    def set_backbone_variables(self, variables):
        """The variables whose updates are scaled (the backbone's trainable ones)."""
        self._backbone_keys = frozenset(self._var_key(variable) for variable in variables)

    def apply(self, grads, trainable_variables=None):
        variables = (self._trainable_variables if trainable_variables is None
                     else list(trainable_variables))
        if not self._backbone_keys and len(grads):
            raise LTPLLError("BackboneScaledSGD does not know the backbone's variables: compile "
                             "a PLLModel with it (or call set_backbone_variables)")
        grads = [grad if grad is None or self._var_key(variable) not in self._backbone_keys
                 else grad * keras.ops.cast(self.backbone_lr_scale, grad.dtype)
                 for grad, variable in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "backbone_lr_scale": self.backbone_lr_scale}


def sgd(learning_rate, momentum, backbone_lr_scale=1.0):
    """The run's optimizer: plain ``keras.optimizers.SGD`` unless the backbone trains at another
    rate (``backbone_lr_scale`` not 1; 0 means frozen, see :func:`freeze_backbone`)."""
    if backbone_lr_scale in (0, 1):
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    return BackboneScaledSGD(learning_rate, momentum=momentum,
                             backbone_lr_scale=backbone_lr_scale)


def freeze_backbone(model):
    """``backbone.trainable = False``: no gradients, no weight decay, BatchNorm in inference
    mode. Before compiling."""
    model.backbone.trainable = False
