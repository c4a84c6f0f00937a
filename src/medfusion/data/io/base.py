"""What every reader returns and the one error every reader raises.

A reader takes a path and returns a :class:`Record`: a numpy array in the layout of its
modality plus metadata. Layouts (no batch axis; the collate adds it):

| modality | array | typical metadata |
|---|---|---|
| image  | (C, H, W) float32 | spacing (row, col) mm, modality ("CR", "DX", "US"), view, body_part, photometric |
| volume | (C, D, H, W) float32 | spacing (slice, row, col) mm, orientation ("RAS"), modality |
| signal | (C, T) float32 | sampling_rate Hz, channel_names, units |
| video  | (T, C, H, W) float32 | fps, source frame indices |
| text   | str (in ``Record.text``; ``array`` is None) | encoding |

Patient identifiers (DICOM PatientName, PatientID, birth date, ...) are never put in
metadata and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class DataReadError(ValueError):
    """A file could not be read: names the path and the reason.

    Raised by every reader on a missing, empty, truncated, corrupt or wrong-type file.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Record:
    """One file's content.

    Attributes:
        modality: "image", "volume", "signal", "video" or "text".
        array: the data in the modality's layout (see the module table); None for text.
        meta: metadata without patient identifiers.
        text: the text of a text record.
    """

    modality: str
    array: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


def check_file(path: str | Path) -> Path:
    """The path as a Path, if it names a non-empty regular file.

    Raises:
        DataReadError: if the file is missing, a folder, or empty.
    """
    path = Path(path)
    if not path.exists():
        raise DataReadError(path, "no such file")
    if not path.is_file():
        raise DataReadError(path, "expected a file, found a folder or special file")
    if path.stat().st_size == 0:
        raise DataReadError(path, "file is empty (0 bytes)")
    return path
