# On Colab: installs the pinned GPU stack. Everywhere: makes `unsloth_course` importable, using the
# installed package if there is one, else the copy embedded below (no clone of the repository).
# Generated from notebooks/_setup_cell.py by `python -m tools.build_notebooks`, which adds
# the `#@title Setup` line and fills in the values below.
import base64
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

_PINS = ["@@PINS@@"]
_VERSION = "@@VERSION@@"


def _setup_course(package_b64):
    in_colab = "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ
    if in_colab:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *_PINS])
        did = f"installed {', '.join(_PINS)}"
    else:
        did = "nothing installed"
    target = None
    if importlib.util.find_spec("unsloth_course") is None:  # not installed: use the embedded copy
        target = os.environ.get("UNSLOTH_COURSE_PKG_DIR") or "/content/unsloth_course_pkg"
        if not in_colab and "UNSLOTH_COURSE_PKG_DIR" not in os.environ:
            target = tempfile.mkdtemp(prefix="unsloth_course_")
        shutil.rmtree(os.path.join(target, "unsloth_course"), ignore_errors=True)
        blob = io.BytesIO(base64.b64decode(package_b64))
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # stays in target
        with tarfile.open(fileobj=blob, mode="r:xz") as archive:
            archive.extractall(target, **safe)
        sys.path.insert(0, target)
        importlib.invalidate_caches()
    import unsloth_course

    if target:
        unsloth_course._embedded_copy_in = target  # so that a re-run of this cell says the same
    embedded_in = getattr(unsloth_course, "_embedded_copy_in", None)
    if embedded_in:
        what = f"unsloth_course {_VERSION} from the embedded copy in {embedded_in}"
    else:
        what = f"using the installed unsloth_course from {os.path.dirname(unsloth_course.__file__)}"
    print(f"Colab: {did}; {what}" if in_colab else f"Local: {what}; {did}")


_PACKAGE = "@@PACKAGE@@"

_setup_course(_PACKAGE)
