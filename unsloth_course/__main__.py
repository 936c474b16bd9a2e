"""python -m unsloth_course ... (the same as the unsloth-course command)."""

import sys

from .cli import main

sys.exit(main())
