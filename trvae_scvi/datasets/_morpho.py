from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import ndimage

CONDITIONS = ("normal", "thin", "thick")


def morpho_digits(image_size: int = 28) -> ad.AnnData:
    """Handwritten digits in three stroke widths, like the trVAE paper's Morpho-MNIST.

    The 1,797 8×8 digits that scikit-learn ships (no download) are upscaled to
    ``image_size``² pixels (bilinear) with values in [0, 1] (``"normal"``); ``"thin"`` and
    ``"thick"`` are the same images after a grey-level erosion and a dilation with a 3×3
    square, so that every transformed image has an exact ground truth. Deterministic.

    Parameters
    ----------
    image_size
        Height and width of the images (a multiple of 4 for the convolutional model).

    Returns
    -------
    anndata.AnnData
        5,391 rows (each image in each stroke width) × ``image_size``² pixels, ``X`` float32;
        ``obs["condition"]`` (normal, thin, thick), ``obs["digit"]`` (0-9, a string) and
        ``obs["image_id"]`` (the source image, shared by its three versions);
        ``uns["image_shape"] = (1, image_size, image_size)``.

    Examples
    --------
    >>> digits = trvae_scvi.datasets.morpho_digits()
    >>> digits.shape, digits.uns["image_shape"].tolist()
    ((5391, 784), [1, 28, 28])
    >>> mass = digits.to_df().sum(1).groupby(digits.obs["condition"], observed=True).mean()
    >>> bool(mass["thin"] < mass["normal"] < mass["thick"])
    True

    """
    from sklearn.datasets import load_digits

    if image_size < 8 or image_size % 4:
        raise ValueError(f"image_size={image_size!r} must be a multiple of 4, at least 8.")
    digits = load_digits()
    zoom = image_size / 8
    normal = np.stack([ndimage.zoom(image / 16.0, zoom, order=1) for image in digits.images]).clip(
        0.0, 1.0
    )
    versions = {
        "normal": normal,
        "thin": np.stack([ndimage.grey_erosion(image, size=(3, 3)) for image in normal]),
        "thick": np.stack([ndimage.grey_dilation(image, size=(3, 3)) for image in normal]),
    }
    n_images = len(normal)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(np.repeat(CONDITIONS, n_images), categories=CONDITIONS),
            "digit": pd.Categorical(np.tile(digits.target, 3).astype(str)),
            "image_id": np.tile(np.arange(n_images), 3),
        },
        index=[f"{c}_{i}" for c in CONDITIONS for i in range(n_images)],
    )
    pixels = np.concatenate([versions[c].reshape(n_images, -1) for c in CONDITIONS])
    adata = ad.AnnData(
        X=pixels.astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=[f"pixel_{i}" for i in range(image_size**2)]),
    )
    adata.uns["image_shape"] = np.array([1, image_size, image_size])
    return adata
