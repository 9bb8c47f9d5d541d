"""Image grids: rows of image batches laid out side by side and saved as PNG."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.utils import atomic_path, signed_to_uint8, uint8_to_pil


def image_grid(rows: list[torch.Tensor], padding: int = 2) -> torch.Tensor:
    """Lay out rows (each (B, C, H, W) in [-1, 1]) as a grid: one row per tensor, one column per item.

    Rows may have 1 or 3 channels (grey rows are repeated to RGB) and must share H and W. Returns uint8 (3, H', W').
    """
    columns = max(row.shape[0] for row in rows)
    height, width = rows[0].shape[-2:]
    canvas = torch.full(
        (3, padding + len(rows) * (height + padding), padding + columns * (width + padding)), 255, dtype=torch.uint8
    )
    for row_index, row in enumerate(rows):
        images = signed_to_uint8(row.detach().cpu())
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        for column, image in enumerate(images):
            top = padding + row_index * (height + padding)
            left = padding + column * (width + padding)
            canvas[:, top : top + height, left : left + width] = image
    return canvas


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 1) -> None:
    """Save `image_grid(rows)` as a PNG (atomically), upscaled `scale` times with nearest neighbour."""
    from PIL import Image

    picture = uint8_to_pil(image_grid(rows))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    with atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")


# --- captioned grids ------------------------------------------------------------------------------------------
MIN_CELL = 128  # cells smaller than this are upscaled (nearest) until a person can see them
Legend = list[tuple[str, tuple[int, int, int]]]  # (class name, RGB colour) per label-map class


def upscale_factor(size: int, min_cell: int = MIN_CELL) -> int:
    """The integer nearest-neighbour factor that brings a `size`-pixel image to at least `min_cell` pixels."""
    return max(1, -(-min_cell // max(1, size)))


def captioned_grid(
    rows: list[torch.Tensor],
    title: str | None = None,
    row_titles: list[str] | None = None,
    column_titles: list[str] | None = None,
    captions: list[list[str]] | None = None,
    legend: Legend | None = None,
    min_cell: int = MIN_CELL,
):
    """A grid a person can read: rows (each (B, C, H, W) in [-1, 1]) upscaled with nearest to `min_cell`, with a
    title line, row titles on the left, column titles on top, a caption under each image (`captions[row][col]`)
    and a colour legend for label maps below. Returns a PIL RGB image.

    >>> rows = [torch.zeros(3, 3, 16, 16), torch.ones(3, 3, 16, 16)]
    >>> captioned_grid(rows, "step 100", ["input", "output"]).size[0] > 3 * 128
    True
    """
    from PIL import Image, ImageDraw

    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"captioned_grid: {len(row_titles)} row titles for {len(rows)} rows")
    font = default_font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    line = measure.textbbox((0, 0), "Ag", font=font)[3] + 8  # one line of text with its spacing
    height = max(row.shape[-2] for row in rows)
    scale = upscale_factor(height, min_cell)
    plain = uint8_to_pil(image_grid(rows, padding=2))
    plain = plain.resize((plain.width * scale, plain.height * scale), Image.NEAREST)
    cell, gap = height * scale, 2 * scale  # one image and the padding between images, after upscaling
    caption_space = line if captions else 0
    left_margin = 8 + max((text_size(text)[0] for text in row_titles or []), default=0)
    top = (line if title else 0) + (line if column_titles else 0)
    legend_rows = _legend_rows(legend or [], text_size, max(plain.width + left_margin, 320))
    bottom = len(legend_rows) * line + (6 if legend_rows else 0)
    width = max(left_margin + plain.width, 8 + (text_size(title)[0] if title else 0))
    width = max(width, *(sum(item[2] for item in row) + 8 for row in legend_rows)) if legend_rows else width
    grid_height = plain.height + caption_space * len(rows)
    canvas = Image.new("RGB", (width, top + grid_height + bottom), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill="black", font=font)
    for column, text in enumerate(column_titles or []):
        x = left_margin + gap + column * (cell + gap)
        draw.text((x + (cell - text_size(text)[0]) // 2, top - line + 3), text, fill="black", font=font)
    for row_index in range(len(rows)):
        y = top + row_index * (cell + gap + caption_space)
        band = plain.crop((0, row_index * (cell + gap), plain.width, (row_index + 1) * (cell + gap) + gap))
        canvas.paste(band, (left_margin, y))
        if row_titles:
            text = row_titles[row_index]
            draw.text((4, y + gap + (cell - text_size(text)[1]) // 2), text, fill="black", font=font)
        for column, text in enumerate(captions[row_index] if captions and row_index < len(captions) else []):
            x = left_margin + gap + column * (cell + gap)
            draw.text((x + (cell - text_size(text)[0]) // 2, y + gap + cell + 2), text, fill="black", font=font)
    y = top + grid_height + 6
    for legend_row in legend_rows:
        x = 4
        for name, colour, item_width in legend_row:
            draw.rectangle((x, y, x + line - 6, y + line - 6), fill=tuple(colour), outline="black")
            draw.text((x + line, y), name, fill="black", font=font)
            x += item_width
        y += line
    return canvas


def default_font(size: int = 14):
    """Pillow's default font, at a readable size where FreeType is there (the bitmap font otherwise)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def _legend_rows(legend: Legend, text_size, width: int) -> list[list[tuple[str, tuple[int, int, int], int]]]:
    """Legend entries (name, colour, width in pixels) wrapped into lines no wider than `width`."""
    rows: list[list[tuple[str, tuple[int, int, int], int]]] = []
    used = width
    swatch = text_size("Ag")[1] + 6
    for name, colour in legend:
        item_width = swatch + text_size(name)[0] + 14
        if used + item_width > width:
            rows.append([])
            used = 4
        rows[-1].append((name, colour, item_width))
        used += item_width
    return rows


def save_captioned_grid(rows: list[torch.Tensor], path: str | Path, **captions) -> None:
    """Save `captioned_grid(rows, **captions)` as a PNG, atomically."""
    picture = captioned_grid(rows, **captions)
    with atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")


def save_preview_grid(
    rows: list[torch.Tensor], row_titles: list[str] | tuple[str, ...], path: str | Path, title: str,
    legend: Legend | None = None,
) -> None:
    """The training preview: one titled row per `rows` entry (e.g. input | output | target), a title line (the
    step), a label-map legend when given. Rows beyond the titles get none; missing titles are left blank."""
    titles = [row_titles[index] if index < len(row_titles) else "" for index in range(len(rows))]
    save_captioned_grid(rows, path, title=title, row_titles=titles, legend=legend)
