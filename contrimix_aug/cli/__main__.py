"""``python -m contrimix_aug.cli`` (and ``torchrun -m contrimix_aug.cli train ...``)."""

import sys

from . import main

sys.exit(main())
