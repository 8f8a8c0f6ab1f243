"""Saving and loading TRVAE: atomic saves, and a first read that runs no code from the file."""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import os
import pickle
import shutil
import tempfile
import zipfile
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi.nn import FCLayers
from scvi.utils._docstrings import devices_dsp

if TYPE_CHECKING:
    from ._model import TRVAE

# What a saved TRVAE's model.pt holds besides tensors: numpy arrays (registry, indices, genes)
# and the pandas tables of the training history. A file that names anything else is refused.
_SAFE = {
    f"{obj.__module__}.{obj.__qualname__}": obj
    for obj in (
        codecs.encode,
        dict,
        bytes,
        slice,
        collections.defaultdict,
        collections.OrderedDict,
        np.ndarray,
        np.dtype,
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        *(getattr(np.dtypes, name) for name in np.dtypes.__all__),
        pd.DataFrame,
        pd.Index,
        pd.RangeIndex,
        pd.core.internals.managers.BlockManager,
        pd.core.indexes.base._new_Index,
        pd._libs.internals._unpickle_block,
    )
}


class _Skipped:
    """Stands for a tensor or storage: the checks need none, so none is built."""

    def __init__(self, *args, **kwargs):
        pass


class _RegistryUnpickler(pickle.Unpickler):
    """Unpickles plain data only; tensors become placeholders, anything else is refused."""

    def find_class(self, module: str, name: str):
        # Python 2 names of pickle protocol 2, as pickle's own find_class maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if f"{module}.{name}" in _SAFE:
            return _SAFE[f"{module}.{name}"]
        if (module == "torch._utils" and name.startswith("_rebuild_")) or (
            module == "torch" and name.endswith("Storage")
        ):
            return _Skipped
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid) -> _Skipped:
        return _Skipped()


def read_saved_model(dir_path: str | os.PathLike, prefix: str | None) -> dict:
    """The attributes of a saved model (registry, settings), read without running its code.

    Raises a clear error for a missing, truncated or foreign file, and for one that names
    anything beyond plain data: unpickling it in full, as scvi-tools' loader does
    (``torch.load(weights_only=False)``), could run code.
    """
    model_file = os.path.join(os.fspath(dir_path), f"{prefix or ''}model.pt")
    if not os.path.isfile(model_file):
        raise FileNotFoundError(
            f"dir_path={os.fspath(dir_path)!r} holds no {os.path.basename(model_file)}; pass the "
            "folder given to `model.save`."
        )
    try:
        with zipfile.ZipFile(model_file) as archive:
            data = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
            with archive.open(data) as handle:
                saved = _RegistryUnpickler(handle).load()
        return saved["attr_dict"]
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{model_file} names {error}, which a saved TRVAE never holds: unpickling it could "
            "run code, so it was not loaded. Load only models you saved or whose source you "
            "trust."
        ) from error
    except Exception as error:
        raise ValueError(
            f"{model_file} is not a readable scvi-tools model (truncated or another format: "
            f"{type(error).__name__}: {error}). Save the model again with `model.save`."
        ) from error


class SaveLoadMixin:
    """``save`` that never leaves a half-written model; ``load`` that checks the file first."""

    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **kwargs,
    ) -> None:
        """Save the model (and optionally its AnnData) to a folder.

        The model is written to a new folder beside ``dir_path`` and moved into place only when
        complete, so an interrupted save never leaves a half-written model, and a model that was
        at ``dir_path`` stays loadable until the new one is there.

        Parameters
        ----------
        dir_path
            Folder to save to.
        prefix
            Prefix of the file names.
        overwrite
            Replace an existing ``dir_path``; without it an existing folder is an error.
        save_anndata
            Also save the AnnData, so that :meth:`load` needs none.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save`.

        Returns
        -------
        None
            The model is in ``dir_path``.

        Examples
        --------
        >>> model.save(tmp_path / "trvae_model", save_anndata=True)

        """
        dir_path = os.path.abspath(os.fspath(dir_path))
        if os.path.exists(dir_path) and not overwrite:
            raise ValueError(
                f"dir_path={dir_path!r} exists already. Pass overwrite=True to replace it, or "
                "choose another folder."
            )
        parent = os.path.dirname(dir_path)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".trvae-save-", dir=parent)
        try:
            super().save(
                staging, prefix=prefix, overwrite=True, save_anndata=save_anndata, **kwargs
            )
            if os.path.exists(dir_path):
                previous = staging + "-previous"
                os.replace(dir_path, previous)
                os.replace(staging, dir_path)
                shutil.rmtree(previous)
            else:
                os.replace(staging, dir_path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @classmethod
    @devices_dsp.dedent
    def load(  # noqa: D417 (accelerator, device: scvi-tools' shared docs)
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        **kwargs,
    ) -> TRVAE:
        """Load a model saved with :meth:`save`.

        ``model.pt`` is first read with ``torch.load(weights_only=True)``, allowing only the
        plain data a saved TRVAE holds (tensors, numpy arrays, pandas tables of the training
        history): a file that names anything else, which could run code when unpickled, is
        refused before scvi-tools reads it in full (with ``weights_only=False``).

        Parameters
        ----------
        dir_path
            Folder the model was saved to.
        adata
            AnnData with the same genes, in the same order, and only known conditions; ``None``
            loads the AnnData saved with ``save_anndata=True``.
        %(param_accelerator)s
        %(param_device)s
        prefix
            Prefix of the saved file names.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load`.

        Returns
        -------
        TRVAE
            The trained model.

        Examples
        --------
        >>> model.save(tmp_path / "saved")
        >>> loaded = trvae_scvi.TRVAE.load(tmp_path / "saved", adata)
        >>> loaded.is_trained
        True

        """
        registry = read_saved_model(dir_path, prefix)["registry_"]
        if registry.get("model_name") != cls.__name__:
            raise ValueError(
                f"{dir_path} holds a {registry.get('model_name')!r} model, not a TRVAE; load it "
                "with its own class."
            )
        return super().load(
            dir_path, adata=adata, accelerator=accelerator, device=device, prefix=prefix, **kwargs
        )

    @classmethod
    def load_query_data(cls, adata: AnnData, reference_model: str | TRVAE, **kwargs) -> TRVAE:
        """Map new conditions onto a trained reference (scvi-tools' scArches surgery).

        As :meth:`scvi.model.base.ArchesMixin.load_query_data`: the query's new conditions get
        new columns in the first layers of the encoder and of the MMD layer, and only those
        train. Two changes make that hold for TRVAE:

        - a count model's dispersion of each new condition starts at the mean of the
          reference conditions' dispersions and trains (scvi-tools would leave it frozen at
          its random initial value);
        - :meth:`train` then defaults to ``weight_decay=0``, since weight decay moves the
          frozen weights, whose gradients scvi-tools sets to zero, a little at every step.

        Parameters
        ----------
        adata
            Query cells, with the reference's genes (see ``prepare_query_anndata``).
        reference_model
            A trained TRVAE or the folder it was saved to.
        **kwargs
            Passed to :meth:`scvi.model.base.ArchesMixin.load_query_data`.

        Returns
        -------
        TRVAE
            The query model; train it with :meth:`train`.

        Examples
        --------
        >>> query = adata[:50].copy()
        >>> query.obs["condition"] = "new_study"
        >>> query_model = trvae_scvi.TRVAE.load_query_data(query, model)
        >>> query_model.train(max_epochs=1, enable_progress_bar=False)
        >>> list(query_model.conditions)[-1]
        'new_study'

        """
        if isinstance(reference_model, str | os.PathLike):
            attributes = read_saved_model(reference_model, None)
            registry = attributes["registry_"]
            settings = attributes["init_params_"]["non_kwargs"]
            architecture = settings.get("architecture", "mlp")
            encoding = settings.get("condition_encoding", "joint")
        else:
            registry = reference_model.adata_manager.registry
            architecture = reference_model.module.architecture
            encoding = "joint" if reference_model.module.condition_design is None else "additive"
        if architecture != "mlp" or encoding != "joint":
            raise NotImplementedError(
                "load_query_data maps new conditions into fully connected models with "
                f"condition_encoding='joint'; this one has architecture={architecture!r}, "
                f"condition_encoding={encoding!r}. Train a model with all conditions instead."
            )
        model = super().load_query_data(adata, reference_model, **kwargs)
        model._mapped_query = True
        module = model.module
        for layer in module.modules():
            # Layers without a condition input are frozen whole: scvi-tools zeroes their
            # gradients, so not computing them at all gives the same model, faster.
            if isinstance(layer, FCLayers) and not any(layer.n_cat_list):
                layer.requires_grad_(False)
        reference_conditions = registry["field_registries"]["batch"]["state_registry"]
        n_new = len(model.conditions) - len(reference_conditions["categorical_mapping"])
        if module.is_count_model and n_new > 0 and not module.px_r.requires_grad:
            with torch.no_grad():
                module.px_r[:, -n_new:] = module.px_r[:, :-n_new].mean(1, keepdim=True)
            trainable = torch.zeros_like(module.px_r)
            trainable[:, -n_new:] = 1.0
            module.px_r.requires_grad_(True)
            module.px_r.register_hook(lambda grad: grad * trainable.to(grad.device))
        return model
