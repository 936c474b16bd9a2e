"""python -m unsloth_course ... (the same as the unsloth-course command)."""

import sys

from unsloth_course.cli import main

sys.exit(main())
