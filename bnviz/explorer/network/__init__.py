"""``/network``: BatchNorm2d after the convolutions, BatchNorm1d in the classifier."""
