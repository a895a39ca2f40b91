"""TF-IDF matcher: no training; fitted on the training rows of a fold (scikit-learn, or cuML on a GPU)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.sparse as sp

from compkit.config import TfidfModel
from compkit.errors import BackendUnavailable


def gpu_tfidf_available() -> bool:
    """Return True when RAPIDS cuML and a CUDA GPU are both present."""
    import importlib.util

    if importlib.util.find_spec("cuml") is None:
        return False
    import torch

    return torch.cuda.is_available()


def vectorizer_options(model: TfidfModel) -> dict:
    """Return the TfidfVectorizer arguments shared by scikit-learn and cuML."""
    return {
        "analyzer": model.analyzer,
        "ngram_range": model.ngram_range,
        "max_features": model.max_features,
        "min_df": model.min_df,
        "sublinear_tf": model.sublinear_tf,
        "lowercase": True,
    }


def cuml_lacks(model: TfidfModel) -> str | None:
    """Return which of `model`'s settings cuML's TfidfVectorizer does not run as scikit-learn does (None: none).

    cuML takes analyzer ('word', 'char', 'char_wb'), ngram_range, min_df, max_features, sublinear_tf and
    lowercase like scikit-learn, but its 'char_wb' fails on n-grams longer than one character ("cannot
    reindex on an axis with duplicate labels", NVIDIA/cuml#8416; fixed in August 2026 by NVIDIA/cuml#8429,
    so the RAPIDS releases before it fail), and its 'char_wb' unigrams are 'char' unigrams, without
    scikit-learn's padding spaces.
    """
    if model.analyzer == "char_wb":
        return "analyzer 'char_wb' (cuML's fails on n-grams, NVIDIA/cuml#8416)"
    return None


def tfidf_backend(model: TfidfModel, *, gpu: bool) -> tuple[str, str | None]:
    """Return the backend that fits `model` ("sklearn" or "cuml") and the warning to give about it (or None).

    `model.backend` "sklearn" or "cuml" forces it; "auto" takes cuML when `gpu` (cuML and a CUDA GPU are
    present) unless cuML lacks one of the model's settings, and then falls back to scikit-learn, saying so.
    """
    if model.backend != "auto":
        return model.backend, None
    if not gpu:
        return "sklearn", None
    lacking = cuml_lacks(model)
    if lacking:
        return "sklearn", (f"TF-IDF model {model.name!r} runs on scikit-learn, not cuML: cuML lacks {lacking}; "
                           "set backend = 'sklearn' to silence this")
    return "cuml", None


def fit_transform(model: TfidfModel, fit_texts: list[str], *transform_texts: list[str], backend: str | None = None):
    """Return L2-normalised CSR TF-IDF matrices (float32) of each `transform_texts`, fitted on `fit_texts`.

    `backend` (default: the model's `backend` key) is chosen by `tfidf_backend`.
    """
    if backend not in (None, "auto"):
        model = dataclasses.replace(model, backend=backend)
    chosen, warning = tfidf_backend(model, gpu=model.backend == "auto" and gpu_tfidf_available())
    if warning:
        warnings.warn(warning, stacklevel=2)
    if chosen == "cuml":
        return _cuml_fit_transform(model, fit_texts, transform_texts)
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(**vectorizer_options(model), dtype=np.float32)
    vectorizer.fit(fit_texts)
    return [vectorizer.transform(texts).astype(np.float32).tocsr() for texts in transform_texts]


def _cuml_fit_transform(model: TfidfModel, fit_texts, transform_texts):
    try:
        import cudf
        from cuml.feature_extraction.text import TfidfVectorizer
    except ImportError:
        raise BackendUnavailable("GPU TF-IDF needs RAPIDS: install compkit[gpu] on a machine with a CUDA GPU") from None
    if model.analyzer == "char_wb":
        raise BackendUnavailable("cuML's TfidfVectorizer has no 'char_wb' analyzer: use 'char' or the CPU backend")
    vectorizer = TfidfVectorizer(**vectorizer_options(model))
    vectorizer.fit(cudf.Series(fit_texts))
    matrices = []
    for texts in transform_texts:
        matrix = vectorizer.transform(cudf.Series(texts)).get()
        matrices.append(sp.csr_matrix(matrix, dtype=np.float32))
    return matrices
