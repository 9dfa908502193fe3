"""Where recordings live: the few bundled with the package, and the full shared collection."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import InputError

SHARED_DATA_ENV = "BREATHSYNC_SHARED_DATA"
BIDMC_RATE_HZ = 125
BUNDLED_BIDMC_RECORDS = ("bidmc_04", "bidmc_09", "bidmc_18")


def bundled_path(name: str) -> Path:
    """Path of a recording shipped in ``breathsync/data`` (e.g. ``bidmc_04_resp.csv.gz``)."""
    path = Path(str(resources.files("breathsync") / "data" / name))
    if not path.is_file():
        raise InputError(f"no bundled recording {name!r}")
    return path


def shared_data_dir() -> Path | None:
    """The full data collection: $BREATHSYNC_SHARED_DATA, else ../shared/data beside the repo.

    Returns None when absent (a user's clone): benchmarks and extended tests skip then.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[2]
    candidates.append(repo.parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / "bidmc").is_dir():
            return candidate
    return None


def bidmc_records(data_dir: Path) -> list[str]:
    return sorted(p.name[: -len("_resp.csv.gz")] for p in (data_dir / "bidmc").glob("*_resp.csv.gz"))


def read_breath_annotations(path: str | Path) -> dict[str, npt.NDArray[np.int64]]:
    """Annotators' breath marks: {annotator: sorted 0-based sample indices}."""
    import csv
    import gzip

    path = Path(path)
    marks: dict[str, list[int]] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                marks.setdefault(row["annotator"], []).append(int(row["sample"]))
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: cannot read breath annotations: {exc}") from None
    return {name: np.sort(np.asarray(v, dtype=np.int64)) for name, v in marks.items()}
