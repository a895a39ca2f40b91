import sys

import numpy as np
import pytest
import scipy.sparse
from test_config import MINIMAL as CONFIG
from typer.testing import CliRunner

from compkit.cli.app import app
from compkit.config import parse_config, with_knn_backend
from compkit.errors import BackendUnavailable, CompkitError, ConfigError, DataError, ParameterError
from compkit.neighbors import (
    BACKEND_NAMES,
    CumlKNN,
    FaissKNN,
    KNNBackend,
    ScipySparseKNN,
    TorchKNN,
    get_backend,
    get_sparse_backend,
    l2_normalize,
)
from compkit.neighbors.cuml_knn import cuml_available
from compkit.neighbors.faiss_knn import faiss_available
from compkit.neighbors.torch_knn import cpu_bf16_speedup

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
# cuML tests are marked gpu (skipped without CUDA by the conftest hook) and also need RAPIDS installed.
needs_cuml = [pytest.mark.gpu, pytest.mark.skipif(not cuml_available(), reason="needs cuML (pip install compkit[gpu])")]

# memory="8MiB" makes the block plan split a 1,500-row reference into several reference blocks.
BACKENDS = {
    "torch-fp32": lambda: TorchKNN(precision="fp32"),
    "torch-bf16": lambda: TorchKNN(precision="bf16"),
    "torch-fp32-chunk7": lambda: TorchKNN(precision="fp32", chunk_size=7),
    "torch-bf16-chunk7": lambda: TorchKNN(precision="bf16", chunk_size=7),
    "torch-fp32-reference-blocks": lambda: TorchKNN(precision="fp32", chunk_size=4096, memory="8MiB"),
    "torch-bf16-reference-blocks": lambda: TorchKNN(precision="bf16", chunk_size=4096, memory="8MiB"),
    "torch-auto": lambda: TorchKNN(),
    "faiss": FaissKNN,
    "cuml": CumlKNN,
}
BACKEND_PARAMS = [
    pytest.param(name, marks={"faiss": [needs_faiss], "cuml": needs_cuml}.get(name, []), id=name)
    for name in BACKENDS
]


def clustered_embeddings(n_rows: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n_rows // 8), dim))
    rows = centres[rng.integers(0, len(centres), n_rows)] + 0.7 * rng.standard_normal((n_rows, dim))
    return l2_normalize(rows)


def brute_force(query: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool):
    scores = query.astype(np.float64) @ reference.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    k = min(k, reference.shape[0] - int(exclude_self))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def assert_same_neighbours(result, query, reference, k, exclude_self=False, atol=1e-5):
    similarities, indices = result
    expected_similarities, expected_indices = brute_force(query, reference, k, exclude_self)
    assert similarities.dtype == np.float32 and indices.dtype == np.int64
    assert similarities.shape == indices.shape == expected_indices.shape
    np.testing.assert_allclose(similarities, expected_similarities, atol=atol)
    # the similarities belong to the returned indices, and no reference is returned twice in a row
    exact = np.einsum("qd,qkd->qk", query.astype(np.float64), reference.astype(np.float64)[indices])
    np.testing.assert_allclose(similarities, exact, atol=atol)
    assert all(len(set(row)) == len(row) for row in indices.tolist())
    if exclude_self:
        assert not (indices == np.arange(len(query))[:, None]).any()
    # where a similarity is distinct from the ones ranked just above and below it, its index is determined
    ranked, _ = brute_force(query, reference, k + 1, exclude_self)
    padded = np.pad(ranked, ((0, 0), (1, 1)), constant_values=np.inf)[:, : indices.shape[1] + 2]
    gaps = np.abs(np.diff(padded, axis=1))
    distinct = (gaps[:, :-1] > 1e-4) & (gaps[:, 1:] > 1e-4)
    np.testing.assert_array_equal(indices[distinct], expected_indices[distinct])


@pytest.mark.parametrize("backend_name", BACKEND_PARAMS)
def test_backend_matches_brute_force(backend_name):
    search = BACKENDS[backend_name]()
    query, reference = clustered_embeddings(50, 32, seed=1), clustered_embeddings(1500, 32, seed=2)
    assert_same_neighbours(search(query, reference, 10), query, reference, 10)


@pytest.mark.parametrize("backend_name", BACKEND_PARAMS)
def test_backend_excludes_self_in_a_self_search(backend_name):
    search = BACKENDS[backend_name]()
    embeddings = clustered_embeddings(1500, 32, seed=3)
    query = embeddings[:40]  # exclude_self needs the same rows on both sides: search all of them
    result = search(embeddings, embeddings, 8, exclude_self=True)
    assert_same_neighbours((result[0][:40], result[1][:40]), query, embeddings, 8, exclude_self=True)


@pytest.mark.parametrize("backend_name", BACKEND_PARAMS)
def test_backend_returns_every_reference_when_k_exceeds_them(backend_name):
    search = BACKENDS[backend_name]()
    query, reference = clustered_embeddings(23, 16, seed=4), clustered_embeddings(9, 16, seed=5)
    similarities, indices = search(query, reference, 50)
    assert indices.shape == (23, 9)
    assert_same_neighbours((similarities, indices), query, reference, 50)
    similarities, indices = search(reference, reference, 50, exclude_self=True)
    assert indices.shape == (9, 8)
    assert_same_neighbours((similarities, indices), reference, reference, 50, exclude_self=True)


def test_bf16_path_returns_exact_fp32_similarities():
    query, reference = clustered_embeddings(64, 256, seed=6), clustered_embeddings(4000, 256, seed=7)
    similarities, indices = TorchKNN(precision="bf16").search(query, reference, 20)
    exact = np.einsum("qd,qkd->qk", query.astype(np.float64), reference.astype(np.float64)[indices])
    assert np.abs(similarities - exact).max() < 2e-6  # bf16 scores are off by ~1e-3
    assert_same_neighbours((similarities, indices), query, reference, 20)


def test_auto_precision_keeps_small_searches_in_fp32():
    assert TorchKNN().resolve_precision(100, 1000, 64) == "fp32"
    assert TorchKNN(precision="bf16").resolve_precision(100, 1000, 64) == "bf16"
    assert TorchKNN().resolve_precision(70_000, 70_000, 512) in ("fp32", "bf16")
    assert cpu_bf16_speedup() > 0


def test_search_accepts_float64_and_returns_contract_dtypes():
    reference = clustered_embeddings(30, 8, seed=8).astype(np.float64)
    similarities, indices = get_backend("torch")(reference, reference, 3)
    assert similarities.dtype == np.float32 and indices.dtype == np.int64
    np.testing.assert_array_equal(indices[:, 0], np.arange(30))


def test_search_rejects_bad_arguments():
    embeddings = clustered_embeddings(10, 8, seed=9)
    search = TorchKNN()
    with pytest.raises(DataError, match="k must be a positive integer, got k=0"):
        search(embeddings, embeddings, 0)
    with pytest.raises(DataError, match="same dimension"):
        search(embeddings, embeddings[:, :4], 3)
    with pytest.raises(DataError, match="exclude_self=True needs the query rows to be the reference rows"):
        search(embeddings[:5], embeddings, 3, exclude_self=True)
    with pytest.raises(CompkitError, match="precision must be 'auto', 'fp32' or 'bf16'"):
        TorchKNN(precision="fp16")


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows():
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]])
    normalized = l2_normalize(vectors)
    assert normalized.dtype == np.float32
    np.testing.assert_allclose(normalized, [[0.6, 0.8], [0.0, 0.0]])


def test_get_backend_names_the_valid_choices_for_an_unknown_name():
    with pytest.raises(CompkitError, match="unknown kNN backend 'nope': choose one of auto, torch, faiss, cuml"):
        get_backend("nope")
    assert BACKEND_NAMES == ("auto", "torch", "faiss", "cuml")


def test_get_backend_auto_returns_a_working_search():
    search = get_backend("auto")
    assert isinstance(search, KNNBackend)
    embeddings = clustered_embeddings(200, 16, seed=10)
    assert_same_neighbours(search(embeddings, embeddings, 5, exclude_self=True), embeddings, embeddings, 5, True)


@pytest.mark.parametrize(
    ("module_name", "make_backend", "hint"),
    [
        ("faiss", FaissKNN, "faiss is not installed: pip install faiss-cpu"),
        ("faiss", lambda: get_backend("faiss"), "faiss is not installed: pip install faiss-cpu"),
        ("cuml", CumlKNN, "install compkit\\[gpu\\] on a machine with a CUDA GPU"),
        ("cuml", lambda: get_backend("cuml"), "install compkit\\[gpu\\] on a machine with a CUDA GPU"),
        ("cuml", lambda: get_sparse_backend("cuml"), "install compkit\\[gpu\\] on a machine with a CUDA GPU"),
    ],
)
def test_missing_optional_backend_raises_with_install_hint(monkeypatch, module_name, make_backend, hint):
    monkeypatch.setitem(sys.modules, module_name, None)  # what an uninstalled package looks like to imports
    with pytest.raises(BackendUnavailable, match=hint):
        make_backend()


def random_tfidf(n_rows: int, vocabulary: int, seed: int) -> scipy.sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    counts = scipy.sparse.random(n_rows, vocabulary, density=0.08, format="csr", random_state=rng, dtype=np.float32)
    counts.data = np.ceil(counts.data * 3)
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1))).ravel()
    return scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ counts


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_sparse_search_equals_dense_search_on_the_densified_matrix(chunk_size):
    query, reference = random_tfidf(45, 300, seed=11), random_tfidf(1234, 300, seed=12)
    search = ScipySparseKNN(chunk_size=chunk_size)
    dense_query, dense_reference = query.toarray(), reference.toarray()
    assert_same_neighbours(search(query, reference, 12), dense_query, dense_reference, 12)
    assert_same_neighbours(search(reference, reference, 12, exclude_self=True), dense_reference, dense_reference,
                           12, exclude_self=True)
    assert search(query, reference[:5], 12)[1].shape == (45, 5)


def test_sparse_search_rejects_dense_input_and_unknown_backend():
    with pytest.raises(DataError, match="must be a scipy.sparse matrix"):
        ScipySparseKNN()(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 1)
    with pytest.raises(CompkitError, match="choose one of auto, scipy, cuml"):
        get_sparse_backend("nope")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_torch_cuda_matches_brute_force(precision):
    query, reference = clustered_embeddings(300, 64, seed=13), clustered_embeddings(5000, 64, seed=14)
    search = TorchKNN("cuda", precision=precision, chunk_size=128)
    assert_same_neighbours(search(query, reference, 16), query, reference, 16)
    embeddings = reference[:1000]
    assert_same_neighbours(search(embeddings, embeddings, 16, exclude_self=True), embeddings, embeddings, 16, True)




def test_the_config_chooses_the_knn_backend_auto_by_default():
    assert parse_config(CONFIG, source="tiny.toml").neighbors.backend == "auto"
    assert parse_config(CONFIG + '[neighbors]\nbackend = "faiss"\n', source="tiny.toml").neighbors.backend == "faiss"
    assert BACKEND_NAMES == ("auto", "torch", "faiss", "cuml")


@pytest.mark.parametrize(("extra", "message"), [
    ('[neighbors]\nbackend = "annoy"\n',
     "neighbors.backend: must be one of 'auto', 'torch', 'faiss', 'cuml', got 'annoy'"),
    ('[neighbors]\nbakend = "faiss"\n', "neighbors.bakend: unknown key"),
])
def test_the_neighbors_section_is_checked_strictly(extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(CONFIG + extra, source="tiny.toml")


def test_with_knn_backend_overrides_the_config_and_names_the_parameter_when_unknown():
    config = parse_config(CONFIG + '[neighbors]\nbackend = "torch"\n', source="tiny.toml")
    assert with_knn_backend(config, None) is config
    assert with_knn_backend(config, "faiss").neighbors.backend == "faiss"
    assert config.neighbors.backend == "torch"  # frozen: the override is a new config
    with pytest.raises(ParameterError, match="knn='annoy': must be one of auto, torch, faiss, cuml"):
        with_knn_backend(config, "annoy")


@pytest.mark.parametrize("command", ["tune-threshold", "predict"])
def test_knn_flag_refuses_an_unknown_backend_as_one_red_line(command):
    result = CliRunner().invoke(app, [command, "-c", "demo-match", "--knn", "annoy"])
    assert result.exit_code == 1
    assert "--knn annoy: must be one of auto, torch, faiss, cuml" in result.output
