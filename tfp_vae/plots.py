"""Pictures, one function per picture (matplotlib, Agg backend: no screen needed)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["image_grid", "save_image_grid"]


def image_grid(images, columns: int = 8) -> np.ndarray:
    """Tiles [N, H, W, C] images in [0, 1] into one [rows*H, columns*W, C] array (1px gaps)."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}.")
    count, height, width, channels = images.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels), np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * (height + 1):row * (height + 1) + height,
             column * (width + 1):column * (width + 1) + width] = image
    return grid


def save_image_grid(images, path: str, title: str = "", columns: int = 8) -> str:
    """Writes a PNG grid of `images` atomically and returns its path."""
    grid = image_grid(images, columns)
    figure, axis = plt.subplots(figsize=(columns, grid.shape[0] / grid.shape[1] * columns + 0.4))
    axis.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0, vmax=1.0)
    axis.set_axis_off()
    if title:
        axis.set_title(title)
    temporary = f"{path}.tmp-{os.getpid()}.png"
    figure.savefig(temporary, dpi=80, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)
    return path
