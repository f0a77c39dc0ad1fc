"""``/family``: batch, layer, instance, group and RMS norm on one tensor."""
