import sys

from agg2exp_core.cli import main

sys.exit(main())
