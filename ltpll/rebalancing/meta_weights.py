"""Meta-learned per-example weights (Jamal et al., CVPR 2020, "Rethinking class-balanced methods
for long-tailed visual recognition from a domain adaptation perspective").

Each sample's loss weight is its class-balanced weight plus a learned offset, ``w_i + eps_i``.
Every step the offsets are found afresh, as the authors (and Ren et al.'s learning-to-reweight
before them) do:

1. ``eps = 0``; a *virtual* plain-SGD step (no momentum, no weight decay, the current learning
   rate) on the batch-summed weighted training loss gives
   ``theta~(eps) = theta - lr * grad_theta sum_i (w_i + eps_i) loss_i(theta)``;
2. the loss of ``theta~(eps)`` on a batch of the small balanced clean dev set is differentiated
   with respect to ``eps`` (a gradient through a gradient: second order, done by the backend's
   autodiff, :func:`ltpll.autodiff.grad`);
3. ``eps := -step_size * dL_dev/d eps`` (step size 0.01; no clipping, no normalisation).

The real step then trains with the weights ``w_i + eps_i``. It costs about three normal steps:
the virtual forward and backward pass, the dev forward pass, and the backward pass through both.
"""

from keras import ops

from ltpll.autodiff import grad

# The authors' step on eps.
META_STEP_SIZE = 0.01


def meta_offsets(train_loss, dev_loss, params, batch_size, learning_rate,
                 step_size=META_STEP_SIZE):
    """The learned offsets ``eps`` ``[B]`` of one step.

    Args:
        train_loss: ``train_loss(params, eps)`` -> the batch-summed weighted training loss
            ``sum_i (w_i + eps_i) loss_i(params)``.
        dev_loss: ``dev_loss(params)`` -> the (mean) loss on the dev batch.
        params: list of the trainable parameter tensors ``theta``.
        batch_size: B, the length of ``eps``.
        learning_rate: the virtual step's learning rate (the optimizer's current one).
        step_size: the step on ``eps``.

    Returns:
        ``-step_size * dL_dev(theta~(eps))/d eps`` at ``eps = 0``, without gradient.
    """
    params = list(params)

    def dev_loss_after_virtual_step(eps):
        grads = grad(lambda theta: train_loss(theta, eps), params)
        return dev_loss([p - learning_rate * g for p, g in zip(params, grads)])

    eps_grad = grad(dev_loss_after_virtual_step, ops.zeros((batch_size,), dtype="float32"))
    return ops.stop_gradient(-step_size * eps_grad)
