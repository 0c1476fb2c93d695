"""A PNG contact sheet of the image crops in a folder of mined shards (for looking at crops)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from blendclip_train.shards import ShardSet


def contact_sheet(source: Path | str, png: Path | str, tile: int = 160, columns: int = 6, limit: int = 48) -> Path:
    """Draw up to ``limit`` crops (each fitted into a ``tile`` square, captioned class / camera / size)."""
    tiles = []
    for sample in ShardSet(source):
        for jpeg, camera in zip(sample.images, sample.meta.get("cameras", [])):
            tiles.append((Image.open(io.BytesIO(jpeg)).convert("RGB"), sample.label, camera))
            if len(tiles) == limit:
                break
        if len(tiles) == limit:
            break
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 28)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, label, camera) in enumerate(tiles):
        x, y = (i % columns) * tile, (i // columns) * (tile + 28)
        size = image.size
        image.thumbnail((tile - 4, tile - 4))
        sheet.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
        draw.text((x + 3, y + tile), f"{label}\n{camera.replace('CAM_', '')} {size[0]}x{size[1]}", fill="black")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(png, optimize=True)
    return png
