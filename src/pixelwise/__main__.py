"""``python -m pixelwise``: what ``torchrun -m pixelwise train …`` starts in every process."""

import sys

from .cli import main

sys.exit(main())
