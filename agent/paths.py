"""Where kgrow keeps its data: ``$KGROW_HOME`` if set, else the platform's user data directory."""
from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming kgrow's data directory (the knowledge base lives in its ``kb/``)
HOME_ENV = "KGROW_HOME"


def data_home() -> Path:
    """kgrow's data directory: ``$KGROW_HOME``, else e.g. ``~/.local/share/kgrow`` on Linux."""
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("kgrow"))


def default_kb_dir() -> Path:
    """The knowledge base used when no ``--kb DIR`` is given."""
    return data_home() / "kb"
