"""``python -m hf_margin`` (and ``accelerate launch -m hf_margin``) runs the ``hf-margin`` command."""

from __future__ import annotations

import sys

from hf_margin.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
