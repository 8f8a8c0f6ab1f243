"""Outputs in the data's domain: no negative value for non-negative data, zeros where expected.

Pure functions on arrays, used by the one step of :class:`TRVAE` that turns a method's values
into its output (``TRVAE._in_data_domain``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

GENE_BLOCK = 256  # genes whose values are sorted at once


def zero_fraction(values) -> np.ndarray:
    """Each gene's fraction of cells whose value is exactly 0 (dense or sparse ``values``)."""
    if values.shape[0] == 0:
        return np.zeros(values.shape[1])
    nonzero = values != 0
    return 1.0 - np.asarray(nonzero.sum(axis=0), dtype=np.float64).ravel() / values.shape[0]


def expected_zero_fraction(own, reference_source, reference_target) -> np.ndarray:
    """The predicted cells' own fraction of zeros per gene, moved as the reference's moved.

    ``own``, ``reference_source`` and ``reference_target`` are the real values (dense or
    sparse) of the cells to predict and of the reference's source and target cells.
    """
    change = zero_fraction(reference_target) - zero_fraction(reference_source)
    return np.clip(zero_fraction(own) + change, 0.0, 1.0)


def match_zero_fraction(values: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Set each gene's lowest values to 0 until ``fraction`` of its cells are 0, in place.

    ``values`` are non-negative, cells by genes. Each gene's remaining values are scaled so
    that its mean over the cells is unchanged; at least its largest value stays, so a gene
    with any expression keeps it.
    """
    n_cells = values.shape[0]
    if n_cells < 2:
        return values
    n_zeros = np.minimum(np.rint(fraction * n_cells).astype(int), n_cells - 1)
    # A block of genes at a time: the sorted copy stays small for a large prediction.
    for start in range(0, values.shape[1], GENE_BLOCK):
        genes = slice(start, start + GENE_BLOCK)
        values[:, genes] = _match_block(values[:, genes], n_zeros[genes])
    return values


def _match_block(values: np.ndarray, n_zeros: np.ndarray) -> np.ndarray:
    ordered = np.sort(values, axis=0)
    threshold = np.take_along_axis(ordered, np.maximum(n_zeros - 1, 0)[None], axis=0)[0]
    # Genes asked for no zero, or whose n_zeros lowest values are 0 already, stay as they are.
    threshold = np.where(n_zeros > 0, threshold, -np.inf)
    total = values.sum(axis=0, dtype=np.float64)
    values[values <= threshold] = 0.0
    kept = values.sum(axis=0, dtype=np.float64)
    scale = np.divide(total, kept, out=np.ones_like(total), where=kept > 0)
    values *= scale.astype(values.dtype)
    return values


def like_input(values: np.ndarray, *, sparse: bool):
    """``values`` as a CSR matrix when the input was sparse (its zeros dropped), else as is.

    Converted a block of rows at a time: scipy's conversion of a whole dense matrix holds
    64-bit row and column indices of every nonzero value at once.
    """
    if not sparse:
        return values
    rows = max(1, 2**22 // max(values.shape[1], 1))
    blocks = [sp.csr_matrix(values[start : start + rows]) for start in range(0, len(values), rows)]
    return sp.vstack(blocks, format="csr") if len(blocks) > 1 else sp.csr_matrix(values)
