"""The `unsloth-course` command line and the tooling around the course core.

`main` (the commands), `run` (one technique end to end, headless), `pipeline` (techniques in a chain), `bench`
(Unsloth against the plain backend), `planner` (GPU memory estimates), `profiling`, `distributed` (torchrun)
and `kernels` (attention-kernel compatibility for Unsloth on torch 2.11). The notebooks do not use these, and
their embedded copy of the library leaves them out.

Importing this package gives torch 2.11's varlen attention the argument Unsloth looks for (see `kernels`):
it must happen before anything imports Unsloth, which reads the kernel when it is imported.
"""

from unsloth_course.cli.kernels import install_varlen_gqa
from unsloth_course.hardware import report_once

_notice = install_varlen_gqa()
if _notice:
    report_once("varlen", _notice)

from unsloth_course.cli.main import build_parser, main  # noqa: E402  (after the kernel shim)

__all__ = ["build_parser", "main"]
