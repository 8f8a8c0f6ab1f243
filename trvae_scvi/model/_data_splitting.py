"""Condition-balanced mini-batches for training."""

from __future__ import annotations

import math

import numpy as np
import torch
from scvi import REGISTRY_KEYS, settings
from scvi.dataloaders import DataSplitter
from torch.utils.data import BatchSampler, DataLoader, Dataset, WeightedRandomSampler


class ConditionBalancedDataSplitter(DataSplitter):
    """:class:`~scvi.dataloaders.DataSplitter` whose training batches balance the conditions.

    The MMD compares conditions *within* a mini-batch, so a rare condition that is often absent
    from a batch gets no penalty. With ``condition_balanced=True`` each training cell is drawn
    (with replacement) with probability proportional to ``1 / n_cells(its condition)``, so every
    condition fills about the same share of each batch, as in the trVAE paper. An epoch is
    ``ceil(n_train / batch_size)`` full batches (``floor`` with ``drop_last=True``). Loader
    settings (``num_workers``, ``persistent_workers``, ``pin_memory``) are honoured as by
    scvi-tools' loaders. Validation batches are left as they are.

    Under a distributed strategy (DDP) Lightning hands each process a disjoint share of these
    batches (its ``DistributedSamplerWrapper``), so every process trains on balanced batches too.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager`.
    condition_balanced
        Balance the conditions in training batches.
    **kwargs
        Passed to :class:`~scvi.dataloaders.DataSplitter`.

    Examples
    --------
    >>> import anndata as ad
    >>> from trvae_scvi import TRVAE
    >>> adata = ad.AnnData(np.random.default_rng(0).random((30, 4), dtype=np.float32))
    >>> adata.obs["condition"] = ["control"] * 25 + ["stimulated"] * 5
    >>> TRVAE.setup_anndata(adata, condition_key="condition")
    >>> model = TRVAE(adata, hidden_sizes=(8,), n_latent=2)
    >>> manager = model.adata_manager
    >>> splitter = ConditionBalancedDataSplitter(manager, train_size=1.0, batch_size=10)
    >>> splitter.setup()
    >>> len(splitter.train_dataloader())
    3

    """

    def __init__(self, adata_manager, condition_balanced: bool = True, **kwargs):
        super().__init__(adata_manager, **kwargs)
        self.condition_balanced = condition_balanced

    def train_dataloader(self) -> DataLoader:
        """Training loader; condition-balanced unless disabled.

        Returns
        -------
        torch.utils.data.DataLoader
            With ``condition_balanced``, a loader of ``ceil(n_train / batch_size)`` batches of
            ``batch_size`` cells, drawn with replacement with weights ``1 / n_cells(condition)``;
            otherwise :class:`~scvi.dataloaders.DataSplitter`'s loader.

        Examples
        --------
        >>> import anndata as ad
        >>> from trvae_scvi import TRVAE
        >>> adata = ad.AnnData(np.random.default_rng(0).random((30, 4), dtype=np.float32))
        >>> adata.obs["condition"] = ["control"] * 25 + ["stimulated"] * 5
        >>> TRVAE.setup_anndata(adata, condition_key="condition")
        >>> model = TRVAE(adata, hidden_sizes=(8,), n_latent=2)
        >>> splitter = ConditionBalancedDataSplitter(
        ...     model.adata_manager, train_size=1.0, batch_size=10
        ... )
        >>> splitter.setup()
        >>> batch = next(iter(splitter.train_dataloader()))
        >>> batch["X"].shape
        torch.Size([10, 4])

        """
        if len(self.train_idx) == 0:
            raise ValueError(
                f"train_size={self.train_size!r} leaves no training cell among the "
                f"{self.adata_manager.adata.n_obs} cells. Pass train_size=1.0, or more cells."
            )
        if not self.condition_balanced:
            return super().train_dataloader()
        # Loader settings as scvi-tools' AnnDataLoader takes them: workers from scvi.settings
        # unless given; the batching is ours.
        loader_kwargs = {
            "num_workers": settings.dl_num_workers,
            "persistent_workers": settings.dl_persistent_workers,
            **self.data_loader_kwargs,
        }
        batch_size = loader_kwargs.pop("batch_size", None) or settings.batch_size
        for key in ("distributed_sampler", "drop_dataset_tail", "shuffle"):
            loader_kwargs.pop(key, None)
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()[
            self.train_idx
        ]
        weights = 1.0 / np.bincount(codes)[codes]
        n_batches = (
            max(1, len(self.train_idx) // batch_size)
            if self.drop_last
            else math.ceil(len(self.train_idx) / batch_size)
        )
        sampler = BatchSampler(
            WeightedRandomSampler(
                torch.as_tensor(weights, dtype=torch.double),
                num_samples=n_batches * batch_size,
                replacement=True,
            ),
            batch_size=batch_size,
            drop_last=False,
        )
        dataset = self.adata_manager.create_torch_dataset(
            indices=self.train_idx, load_sparse_tensor=self.load_sparse_tensor
        )
        if self.adata_manager.adata.isbacked:
            dataset = _DistinctPositions(dataset)
        # batch_size=None: the sampler already yields whole batches of positions.
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            pin_memory=self.pin_memory,
            **loader_kwargs,
        )


class _DistinctPositions(Dataset):
    """A dataset that reads each batch's distinct cells once, in increasing order.

    Balanced batches draw cells with replacement; an h5py-backed matrix refuses repeated or
    unsorted positions. The rows come back in the order drawn, repeats included.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, positions) -> dict:
        distinct, inverse = np.unique(np.asarray(positions), return_inverse=True)
        return {key: value[inverse] for key, value in self.dataset[distinct].items()}
