"""``/data-parallel``: batch norm across devices, DDP against SyncBatchNorm on gloo."""
