"""TF-IDF's backend: cuML on a GPU for the settings it has, scikit-learn (with a warning) for the others."""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings

import numpy as np
import pytest
from test_config import MINIMAL

from compkit.config import TfidfModel, parse_config
from compkit.errors import ConfigError
from compkit.models.tfidf import cuml_lacks, fit_transform, tfidf_backend

WORD = TfidfModel(name="tfidf-word", kind="tfidf", analyzer="word", ngram_range=(1, 2))
CHAR_WB = TfidfModel(name="tfidf-char", kind="tfidf", analyzer="char_wb", ngram_range=(2, 4))  # the shipped one
TITLES = ["red leather shoe", "red leather shoes", "blue cotton hat", "a blue hat", "green tea 500ml"]


def test_cuml_lacks_only_the_char_wb_analyzer():
    assert cuml_lacks(WORD) is None
    assert cuml_lacks(dataclasses.replace(WORD, analyzer="char", max_features=10, min_df=2)) is None
    assert "char_wb" in cuml_lacks(CHAR_WB)


def test_auto_takes_cuml_on_a_gpu_and_falls_back_to_sklearn_with_a_warning_for_char_wb():
    assert tfidf_backend(WORD, gpu=True) == ("cuml", None)
    assert tfidf_backend(WORD, gpu=False) == ("sklearn", None)
    assert tfidf_backend(CHAR_WB, gpu=False) == ("sklearn", None)  # nothing to fall back from: no warning
    backend, warning = tfidf_backend(CHAR_WB, gpu=True)
    assert backend == "sklearn"
    assert warning.startswith("TF-IDF model 'tfidf-char' runs on scikit-learn, not cuML: cuML lacks analyzer 'char_wb'")
    assert "backend = 'sklearn'" in warning


def test_the_backend_key_forces_either():
    assert tfidf_backend(dataclasses.replace(WORD, backend="sklearn"), gpu=True) == ("sklearn", None)
    assert tfidf_backend(dataclasses.replace(WORD, backend="cuml"), gpu=False) == ("cuml", None)
    assert tfidf_backend(dataclasses.replace(CHAR_WB, backend="sklearn"), gpu=True) == ("sklearn", None)


def test_the_backend_key_is_checked_by_the_schema():
    text = MINIMAL + '\n[[models]]\nname = "t"\nkind = "tfidf"\nbackend = "gpu"\n'

    with pytest.raises(ConfigError, match=r"models\[0\]\.backend: must be one of 'auto', 'sklearn', 'cuml', got 'gpu'"):
        parse_config(text, source="c.toml")
    assert parse_config(text.replace('"gpu"', '"sklearn"'), source="c.toml").models[0].backend == "sklearn"


def test_sklearn_backend_fits_char_wb_without_a_warning_on_a_cpu():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (matrix,) = fit_transform(CHAR_WB, TITLES, TITLES)
    assert matrix.shape[0] == len(TITLES)
    assert np.allclose(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel(), 1.0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("cuml") is None, reason="needs RAPIDS cuML (pip install compkit[gpu])")
def test_on_a_gpu_word_tfidf_runs_on_cuml_like_sklearn_and_char_wb_falls_back():
    on_gpu = fit_transform(WORD, TITLES, TITLES)[0].toarray()
    on_cpu = fit_transform(dataclasses.replace(WORD, backend="sklearn"), TITLES, TITLES)[0].toarray()
    assert np.allclose(on_gpu @ on_gpu.T, on_cpu @ on_cpu.T, atol=1e-5)  # the same cosine similarities

    with pytest.warns(UserWarning, match="runs on scikit-learn, not cuML"):
        fit_transform(CHAR_WB, TITLES, TITLES)
