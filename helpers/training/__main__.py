"""``python -m helpers.training --config outputs/<run>/train_config.json`` (see :mod:`helpers.training.cli`)."""

import sys

from .cli import main

sys.exit(main())
