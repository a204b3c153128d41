"""``python -m llmbatch.local.simulator``."""

from llmbatch.local.simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
