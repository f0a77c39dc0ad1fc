"""``/inference``: batch norm folded into the conv, and frozen for fine-tuning."""
