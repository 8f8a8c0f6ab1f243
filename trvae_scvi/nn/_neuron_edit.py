"""NeuronEdit (Amodio et al.): a per-neuron percentile map between two sets of activations."""

from __future__ import annotations

import numpy as np


def neuron_edit(
    values: np.ndarray, source: np.ndarray, target: np.ndarray, n_percentiles: int = 100
) -> np.ndarray:
    """Map activations from the source distribution to the target one, neuron by neuron.

    For each neuron, the ``n_percentiles`` evenly spaced percentiles (0 to 100) of the source
    and target activations define a piecewise-linear function that sends the j-th source
    percentile to the j-th target percentile. Values outside the source range follow the first or
    last segment. Neurons whose source percentiles tie are shifted by the target offset.

    Parameters
    ----------
    values
        Activations to edit, shape ``(n_cells, n_neurons)``.
    source, target
        Activations of the source and target cells, shapes ``(n_source, n_neurons)`` and
        ``(n_target, n_neurons)``.
    n_percentiles
        Number of percentiles (at least 2).

    Returns
    -------
    numpy.ndarray
        Edited activations, shape and dtype of ``values``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> source = rng.normal(0, 1, (500, 2))
    >>> edited = neuron_edit(source, source, source + 3.0)
    >>> np.allclose(edited, source + 3.0)
    True

    """
    if n_percentiles < 2:
        raise ValueError(f"n_percentiles={n_percentiles!r} must be at least 2.")
    if len(source) == 0 or len(target) == 0:
        raise ValueError("neuron_edit needs at least one source and one target cell.")
    if not values.shape[1] == source.shape[1] == target.shape[1]:
        raise ValueError(
            f"values, source and target must have the same neurons; got {values.shape[1]}, "
            f"{source.shape[1]} and {target.shape[1]}."
        )
    q = np.linspace(0.0, 100.0, n_percentiles)
    source_pct = np.percentile(source, q, axis=0)  # (n_percentiles, n_neurons)
    target_pct = np.percentile(target, q, axis=0)
    edited = np.empty(values.shape, dtype=np.float64)
    for neuron in range(values.shape[1]):
        s, t, v = source_pct[:, neuron], target_pct[:, neuron], values[:, neuron]
        segment = np.clip(np.searchsorted(s, v, side="right") - 1, 0, n_percentiles - 2)
        width = s[segment + 1] - s[segment]
        slope = np.divide(
            t[segment + 1] - t[segment], width, out=np.ones_like(width), where=width > 0
        )
        edited[:, neuron] = t[segment] + (v - s[segment]) * slope
    return edited.astype(values.dtype, copy=False)
