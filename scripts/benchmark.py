"""Time and memory of one SNN training step: spikelight, a plain-PyTorch reference, and peers.

The entry point of the ``bench`` package beside this file; what is measured and how is in
``bench/__init__.py`` and docs/benchmarks.md, the options in ``--help``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
