"""``python -m rlft ...`` is ``rlft ...``: what ``torchrun -m rlft train RECIPE.yaml`` starts on each rank."""

import sys

from rlft.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
