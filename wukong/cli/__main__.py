"""`python -m wukong.cli`: the `wukong` command, for a process started by path."""

import sys

from wukong.cli import main

sys.exit(main())
