"""The networks: backbones, heads, on-device augmentation and :class:`PLLModel`.

Only the constants below live here, so ``ltpll.config`` can check them without Keras.
"""

# Storage dtypes of the N x C confidence table (``--confidence-dtype``).
CONFIDENCE_DTYPES = ("float32", "float16")
