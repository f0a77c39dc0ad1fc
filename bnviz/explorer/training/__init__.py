"""``/training``: why batch norm helps training, the papers' experiments on the digits."""
