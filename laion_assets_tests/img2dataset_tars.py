"""Building small tars in img2dataset's webdataset layout by hand (``KEY.jpg`` + ``KEY.txt`` + ``KEY.json``)."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

NOT_AN_IMAGE = b"\x89PNG\r\n\x1a\n but then garbage"


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def sample(row: int, image: bytes | None, ext: str = "jpg", caption: str | None = None) -> tuple[str, dict]:
    caption = caption if caption is not None else f"caption {row}"
    meta = {"key": f"{row:09d}", "caption": caption, "status": "success", "laion_row": row}
    meta.update({"original_width": 40, "original_height": 30})
    files = {"txt": caption.encode(), "json": json.dumps(meta).encode()}
    if image is not None:
        files[ext] = image
    return f"{row:09d}", files
