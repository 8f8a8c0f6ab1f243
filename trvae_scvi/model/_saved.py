"""Saving and loading TRVAE: atomic saves, and a first read that runs no code from the file."""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import shutil
import sys
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


# Samples of everything a saved TRVAE's model.pt holds besides tensors and plain Python data:
# numpy arrays and scalars (registry, genes, settings) and, in files written before version
# 0.3, the training history as pandas tables. Pickling them with the installed numpy and pandas
# tells which globals these libraries use for them, whatever their private names are today.
def _pickled_samples() -> list:
    numbers = [np.zeros(1, dtype=code) for code in np.typecodes["All"] if code not in "MmV"]
    history = pd.DataFrame(
        {"train_loss": np.zeros(2, np.float32)}, index=pd.Index([0, 1], name="epoch")
    )
    return [
        *numbers,
        *(array[0] for array in numbers),
        np.array(["a"], dtype=object),
        history,
        history.reset_index(drop=True),
        history.astype(object),
        pd.Index(["a"], dtype="string"),
        collections.OrderedDict(),
        collections.defaultdict(list),
        b"bytes",
        # Containers of plain data, which pickles may name as types.
        *(dict, list, tuple, set, frozenset, bytearray, slice, int, float, complex, bool, str),
    ]


class _GlobalsRecorder(pickle.Unpickler):
    """Unpickles a pickle made here and records the globals it names."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.found: dict[int, object] = {}

    def find_class(self, module: str, name: str):
        found = super().find_class(module, name)
        self.found[id(found)] = found
        return found


def _plain_data_globals() -> dict[int, object]:
    """The classes and functions that unpickle the samples, by identity."""
    allowed: dict[int, object] = {}
    for sample in _pickled_samples():
        recorder = _GlobalsRecorder(pickle.dumps(sample, protocol=2))
        recorder.load()
        allowed.update(recorder.found)
    return allowed


class _Skipped:
    """Stands for a tensor or storage: the checks need none, so none is built."""

    def __init__(self, *args, **kwargs):
        pass


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only; tensors become placeholders, anything else is refused.

    A global is accepted when it is, by identity, one that unpickles the samples of
    :func:`_pickled_samples` with the installed libraries, and is looked up only in modules
    already imported: a name in the file never imports anything.
    """

    def __init__(self, handle):
        super().__init__(handle)
        self.allowed = _plain_data_globals()

    def find_class(self, module: str, name: str):
        # Python 2 names of pickle protocol 2, as pickle's own find_class maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module == "torch._utils" and name.startswith("_rebuild_")) or (
            module == "torch" and name.endswith("Storage")
        ):
            return _Skipped
        found = sys.modules.get(module)
        for attribute in name.split("."):
            found = getattr(found, attribute, None)
        if found is None or id(found) not in self.allowed:
            raise _RefusedGlobal(f"{module}.{name}")
        return found

    def persistent_load(self, pid) -> _Skipped:
        return _Skipped()


class _RefusedGlobal(pickle.UnpicklingError):
    """A saved file names a global that does not unpickle plain data."""


def read_saved_model(dir_path: str | os.PathLike, prefix: str | None) -> dict:
    """The attributes of a saved model (registry, settings), read without running its code.

    ``model.pt`` is read by a restricted unpickler (Python's ``find_class`` pattern): tensors
    are skipped, and the only globals it calls are those with which the installed numpy and
    pandas unpickle arrays, scalars and tables, found by pickling samples of them (so no private
    name is written here, and a new release's names are found the same way).

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
                saved = _PlainDataUnpickler(handle).load()
        return saved["attr_dict"]
    except _RefusedGlobal as error:
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


def _plain_history(history: dict[str, pd.DataFrame] | None) -> dict | None:
    """The training history as lists, which unpickle without pandas."""
    if history is None:
        return None
    return {
        key: {
            "index": frame.index.tolist(),
            "index_name": frame.index.name,
            "columns": {str(column): frame[column].tolist() for column in frame.columns},
        }
        for key, frame in history.items()
    }


def _history_frames(history: dict | None) -> dict[str, pd.DataFrame] | None:
    """The training history as tables again (tables saved before version 0.3 stay as read)."""
    if history is None:
        return None
    return {
        key: saved
        if isinstance(saved, pd.DataFrame)
        else pd.DataFrame(
            saved["columns"], index=pd.Index(saved["index"], name=saved["index_name"])
        )
        for key, saved in history.items()
    }


class SaveLoadMixin:
    """``save`` that never leaves a half-written model; ``load`` that checks the file first.

    The training history is saved as plain lists (``history_`` is a dict of pandas tables in
    memory), so a saved model unpickles with no pandas class: pandas renames the private
    functions its pickles call between releases.
    """

    def _get_user_attributes(self) -> list[tuple[str, object]]:
        return [
            (name, _plain_history(value) if name == "history_" else value)
            for name, value in super()._get_user_attributes()
        ]

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

        ``model.pt`` is first read by a restricted unpickler that accepts only the plain data a
        saved TRVAE holds (tensors, numpy arrays and scalars, and the pandas tables of the
        training history in files saved before version 0.3), recognised with the installed
        numpy and pandas: a file that names anything else, which could run code when
        unpickled, is refused before scvi-tools reads it in full (with ``weights_only=False``).
        Models saved with pandas 2 load with pandas 3 and the other way round.

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
        model = super().load(
            dir_path, adata=adata, accelerator=accelerator, device=device, prefix=prefix, **kwargs
        )
        model.history_ = _history_frames(model.history_)
        return model

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
        model.history_ = _history_frames(model.history_)
        model.mapped_query_ = True
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
