"""``python -m dashboard.auth``: hash a password, check a deployment's configuration."""
import sys

from dashboard.auth import main

sys.exit(main())
