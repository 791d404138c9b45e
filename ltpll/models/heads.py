"""The cosine classifier head LDAM is defined with (the usual head is a Dense layer; each loss
weighting says which it needs, :meth:`ltpll.weighting.base.LossWeighting.build_head`).

LDAM's margins (Cao et al., NeurIPS 2019) are in cosine units: the authors' CIFAR model
normalises both the features and each class's weight vector, and multiplies the cosine by a
scale ``s`` (30) before the softmax. With an unnormalised linear head a margin of 0.5 means
nothing fixed, since the network can scale its logits past any margin.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ltpll")
class CosineHead(keras.layers.Layer):
    """``scale * cos(feature, class weight)`` for every class.

    Args:
        units: number of classes.
        scale: the logit scale ``s``.
    """

    def __init__(self, units, scale=30.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.scale = float(scale)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform", name="kernel")
        self.built = True

    def call(self, features):
        features = ops.cast(features, self.compute_dtype)
        normed = features / ops.maximum(ops.norm(features, axis=-1, keepdims=True), 1e-12)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        kernel = kernel / ops.maximum(ops.norm(kernel, axis=0, keepdims=True), 1e-12)
        return self.scale * ops.matmul(normed, kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}
