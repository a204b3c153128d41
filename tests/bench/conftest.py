"""``bench`` is a top-level package of the repo; an editable install made before it existed
does not map it, so make it importable from the repo root either way."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
