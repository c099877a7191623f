"""`python -m codedpo.components.train`: see cli.py."""

import sys

from codedpo.components.train.cli import main

sys.exit(main())
