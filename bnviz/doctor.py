"""``python -m bnviz.doctor CHECKPOINT [--json]``: the batch norms of a saved state dict, checked.

Reads ``.safetensors`` (bnviz's own reader) or ``.pt``/``.pth`` (``torch.load(weights_only=True)``
only, never a pickle fallback), runs ``bnviz.diagnose`` on the state dict and prints the layer
table and the findings, or the report as JSON. Exit status: 0 no error-level finding, 1 at least
one, 2 the file was refused or unreadable (a message on stderr says why).

A state dict holds no momentum, eps, modes or graph: the model-level checks (``tf-momentum``,
``tf-eps``, ``bias-before-norm``, ``foldable``, ``train-mode-at-eval``, ``frozen-but-updating``)
and the checks with batches need ``bnviz.diagnose(model, batches)`` in Python; the output lists
them as not checked.
"""

from __future__ import annotations

import argparse
import json
import sys

from bnviz.diagnosis import diagnose
from bnviz.safe_load import CheckpointError, load_state_dict_file

MAX_FILE_BYTES = 4 * 2**30  # the command line reads local files; the app's upload limit is far lower


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m bnviz.doctor",
        description="Check the batch norms of a saved state dict (.safetensors, .pt, .pth).",
        epilog="Exit status: 0 clean, 1 an error-level finding, 2 the file was refused or unreadable. "
        "Model-level checks need the model: bnviz.diagnose(model) in Python.",
    )
    parser.add_argument("checkpoint", help="a state dict: .safetensors, or .pt/.pth saved with torch.save")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (docs/doctor.md: the schema)")
    args = parser.parse_args(argv)
    try:
        state = load_state_dict_file(args.checkpoint, MAX_FILE_BYTES)
        report = diagnose(state)
    except (CheckpointError, ValueError) as exc:
        print(f"bnviz.doctor: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False, ensure_ascii=False))
    else:
        print(report)
    return report.exit_status()


if __name__ == "__main__":
    sys.exit(main())
