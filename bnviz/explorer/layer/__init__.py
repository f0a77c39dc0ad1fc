"""The layer explorer (``/``): one batch norm, bnviz against torch on a chosen tensor."""
