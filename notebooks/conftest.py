"""pytest settings for `pytest --nbmake notebooks/`: a quick, offline, headless run of every notebook.

nbmake starts each kernel with this process's environment, so the variables set here reach the notebooks.
`setdefault`: a GPU run can still pass e.g. `UNSLOTH_COURSE_QUICK=0 pytest --nbmake notebooks/`.
"""

import os

os.environ.setdefault("UNSLOTH_COURSE_QUICK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The jupytext sources and the Setup cell template are not test modules (and their names would not be
# collected by default either); nbmake runs the generated .ipynb files.
collect_ignore_glob = ["*.py"]
