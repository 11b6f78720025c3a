"""`python -m anomaly_vlm.cli`, the same as the `anomaly-vlm` command."""

import sys

from . import main

sys.exit(main())
