"""``/doctor``: ``bnviz.diagnose`` on sample checkpoints bnviz builds itself, or on a visitor's upload."""
