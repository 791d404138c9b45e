"""Better representations for long-tailed PLL (Yang & Xu, NeurIPS 2020):

* :mod:`ltpll.representation.ssp`: self-supervised rotation pre-training of the backbone
  (``ltpll pretrain``, then ``ltpll train --init-from DIR``);
* :mod:`ltpll.representation.pseudo_label`: pseudo-labelling unlabeled images with a trained run
  (``ltpll pseudo-label``, then ``ltpll train --pseudo-labels FILE``).
"""
