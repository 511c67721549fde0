"""``python -m etcdagent.cli.docgen [--check]``."""

import sys

from etcdagent.cli.docgen import main

sys.exit(main())
