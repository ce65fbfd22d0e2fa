"""The package's own namespace: what ``import tuner`` gives, and what it costs."""

from __future__ import annotations

import subprocess
import sys

import tuner
import tuner.storage


def test_open_storage_is_exported_from_the_package() -> None:
    assert "open_storage" in tuner.__all__
    assert tuner.open_storage is tuner.storage.open_storage
    from tuner import open_storage

    assert open_storage is tuner.storage.open_storage


def test_import_tuner_stays_light() -> None:
    """``import tuner`` loads neither torch nor Optuna nor SQLAlchemy; ``open_storage`` does."""
    code = (
        "import sys, tuner\n"
        "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'optuna', "
        "'sqlalchemy'})\n"
        "print(heavy())\n"
        "tuner.open_storage\n"
        "print(heavy())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before == "[]"
    assert after == "['optuna', 'sqlalchemy']"
