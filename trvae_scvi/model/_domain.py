"""Outputs in the data's domain: no negative value for non-negative data, zeros where expected.

Pure functions on arrays, used by the one step of :class:`TRVAE` that turns a method's values
into its output (``TRVAE._in_data_domain``). :data:`ZERO_RULES` are ``predict``'s ``zeros``
options for ``mse`` draws: each takes the floored values, each gene's expected fraction of
zeros and the cells' own real values.
"""

from __future__ import annotations

import functools

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


def match_zero_fraction(values: np.ndarray, fraction: np.ndarray, own=None) -> np.ndarray:
    """Set each gene's lowest values to 0 until ``fraction`` of its cells are 0, in place.

    ``values`` are non-negative, cells by genes; ``own`` (the cells' real values) is not used.
    Each gene's remaining values are scaled so that its mean over the cells is unchanged; at
    least its largest value stays, so a gene with any expression keeps it.
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


def keep_own_zeros(
    values: np.ndarray, fraction: np.ndarray, own, *, keep_mean: bool = False
) -> np.ndarray:
    """Keep at 0 the values of cells whose own value is 0, in place, filling in only enough.

    ``own`` holds the cells' real values (dense or sparse), ``fraction`` each gene's wanted
    fraction of zeros. Where a gene's own zeros are more than ``fraction`` of the cells, the
    largest predicted values of its non-expressing cells are kept, as many as the difference;
    every other value of a non-expressing cell becomes 0. Values of expressing cells are left
    as they are. With ``keep_mean``, the values taken from a gene's non-expressing
    cells go to those filled in (scaled alike), so its mean is kept wherever one is.
    """
    n_cells = values.shape[0]
    own = sp.csc_matrix(own)
    for start in range(0, values.shape[1], GENE_BLOCK):
        genes = slice(start, start + GENE_BLOCK)
        not_expressed = own[:, genes].toarray() == 0
        n_filled = not_expressed.sum(axis=0) - np.rint(fraction[genes] * n_cells).astype(int)
        values[:, genes] = _keep_block(values[:, genes], not_expressed, n_filled, keep_mean)
    return values


def _keep_block(
    values: np.ndarray, not_expressed: np.ndarray, n_filled: np.ndarray, keep_mean: bool
) -> np.ndarray:
    candidates = np.where(not_expressed, values, -np.inf)
    if keep_mean:  # what the non-expressing cells hold before any is set to 0
        taken = np.where(not_expressed, values, 0).sum(axis=0, dtype=np.float64)
    ordered = -np.sort(-candidates, axis=0)  # descending per gene
    position = np.clip(n_filled - 1, 0, values.shape[0] - 1)
    lowest_filled = np.take_along_axis(ordered, position[None], axis=0)[0]
    lowest_filled = np.where(n_filled > 0, lowest_filled, np.inf)
    values[not_expressed & (values < lowest_filled)] = 0.0
    if keep_mean:
        left = np.where(not_expressed, values, 0).sum(axis=0, dtype=np.float64)
        scale = np.divide(taken, left, out=np.ones_like(taken), where=left > 0)
        values *= np.where(not_expressed, scale, 1.0).astype(values.dtype)
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


ZERO_RULES = {
    "floored": None,
    "kept": keep_own_zeros,
    "kept_mean": functools.partial(keep_own_zeros, keep_mean=True),
    "matched": match_zero_fraction,
}
