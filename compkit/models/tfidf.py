"""TF-IDF matcher: no training; fitted on the training rows of a fold (scikit-learn, or cuML on a GPU)."""

from __future__ import annotations

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


def fit_transform(model: TfidfModel, fit_texts: list[str], *transform_texts: list[str], backend: str = "auto"):
    """Return L2-normalised CSR TF-IDF matrices (float32) of each `transform_texts`, fitted on `fit_texts`."""
    use_gpu = backend == "cuml" or (backend == "auto" and gpu_tfidf_available())
    if use_gpu:
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
