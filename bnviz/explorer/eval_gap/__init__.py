"""``/eval-gap``: why a batch-norm network is worse in eval() than in train(), six causes."""
