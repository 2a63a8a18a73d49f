"""A figure to PNG bytes and a TensorBoard image, rendered once on matplotlib's Agg canvas.

The figure is a `matplotlib.figure.Figure` bound to its own `FigureCanvasAgg`: nothing goes
through pyplot, so no figure is kept in a global registry and no backend is switched for the
process (a run that draws leaves matplotlib as it found it).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from archnas.utils import atomic

TB_PREFIX = "plots"  # TensorBoard's IMAGES tab groups the pictures under this tag prefix


@dataclass
class Picture:
    name: str  # the file stem (`cell_normal` -> cell_normal.png) and the TensorBoard tag's tail
    figure: Figure

    def pixels(self) -> np.ndarray:
        """The figure drawn: uint8 RGB, [height, width, 3]."""
        canvas = FigureCanvasAgg(self.figure)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def file_name(text: str) -> str:
    """A label or stage name as a file stem: letters, digits, `_`, `-` and `.` kept, anything else `_`
    (labels such as `normal/op_2_0` or `s1_i0` name pictures)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip(".") or "_"


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_pictures(pictures: Sequence[Picture], folder: Path, tb: Any = None, step: int = 0) -> list[str]:
    """Each picture as `folder/<name>.png` (atomic) and, with a SummaryWriter `tb`, as the image
    `plots/<name>` at `step`; returns the file names written, in order."""
    names = []
    for picture in pictures:
        pixels = picture.pixels()
        name = f"{picture.name}.png"
        atomic.write_bytes(folder / name, png_bytes(pixels))
        if tb is not None:
            tb.add_image(f"{TB_PREFIX}/{picture.name}", pixels, step, dataformats="HWC")
        names.append(name)
    if tb is not None:
        tb.flush()
    return names
