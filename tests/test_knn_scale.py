"""Searches at gallery scale: memory-bounded blocks over float16 memory maps, Dask shards, the IVF option."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_config import MINIMAL as CONFIG

from compkit.config import NeighborSettings, parse_config, with_knn_backend
from compkit.errors import ConfigError
from compkit.neighbors import FaissKNN, TorchKNN, make_search, parse_memory
from compkit.neighbors.faiss_knn import faiss_available
from compkit.retrieval.search import search

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")


@pytest.fixture(autouse=True)
def two_threads():
    """Search with two torch threads, so two block workers, whatever OMP_NUM_THREADS says (make test sets 1):
    block plans depend on the worker count, and the threaded path is the one to test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def tied_rows(n_rows: int, dim: int, seed: int) -> np.ndarray:
    """Return small-integer rows, a third of them repeated: every score is exact and many tie."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(-2, 3, (n_rows, dim)).astype(np.float32)
    rows[n_rows // 3: 2 * (n_rows // 3)] = rows[: n_rows // 3]
    return rows


def stable_reference(query, reference, k, exclude_self):
    """Top k by (score desc, index asc) from the full float64 score matrix."""
    scores = query.astype(np.float64) @ reference.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1).astype(np.float32), order


def float16_memmap(tmp_path, rows: np.ndarray, name: str = "embeddings.npy") -> np.ndarray:
    path = tmp_path / name
    np.save(path, rows.astype(np.float16))
    return np.load(path, mmap_mode="r")


def test_parse_memory_reads_units_and_rejects_nonsense():
    assert parse_memory("2GB") == 2 * 10**9
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(64 * 2**20) == 64 * 2**20
    with pytest.raises(ConfigError, match="such as '2GB'"):
        parse_memory("lots")
    with pytest.raises(ConfigError, match="at least 8 MiB"):
        parse_memory("1MB")


def test_neighbors_memory_is_a_config_setting_kept_by_knn_override():
    config = parse_config(CONFIG + '\n[neighbors]\nmemory = "256MiB"\n', source="c.toml")
    assert config.neighbors.memory == "256MiB"
    assert with_knn_backend(config, "faiss").neighbors.memory == "256MiB"
    with pytest.raises(ConfigError, match="neighbors: memory must be a size"):
        parse_config(CONFIG + '\n[neighbors]\nmemory = "big"\n', source="c.toml")
    assert parse_config(CONFIG, source="c.toml").neighbors.index == "exact"  # approximate is never the default


@pytest.mark.parametrize("exclude_self", [False, True])
def test_blocked_search_equals_unblocked_search_with_ties(exclude_self):
    rows = tied_rows(3000, 24, seed=0)
    unblocked = TorchKNN(precision="fp32", memory="2GB")
    blocked = TorchKNN(precision="fp32", memory="8MiB", chunk_size=500)
    assert blocked.plan(3000, 3000, 24, 25, "fp32").reference_rows < 2000  # really several blocks
    expected = unblocked(rows, rows, 25, exclude_self=exclude_self)
    found = blocked(rows, rows, 25, exclude_self=exclude_self)
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found[0], expected[0])
    truth_similarities, truth = stable_reference(rows, rows, 25, exclude_self)
    np.testing.assert_array_equal(found[1], truth)  # ties go to the lower index, whatever the blocking
    np.testing.assert_array_equal(found[0], truth_similarities)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_blocked_bf16_search_equals_unblocked_search_with_duplicate_rows(exclude_self):
    # bf16 candidates tied at their cut-off may differ between block plans (ordered_topk); the exact re-rank
    # makes the results equal unless more than the margin (16 here) tie there, which duplicates in pairs do not.
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((1500, 32)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows[500:1000] = rows[:500]
    blocked = TorchKNN(precision="bf16", memory="8MiB", chunk_size=300)
    assert blocked.plan(1500, 1500, 32, 41, "bf16").reference_rows < 1000
    expected = TorchKNN(precision="bf16", memory="2GB")(rows, rows, 25, exclude_self=exclude_self)
    found = blocked(rows, rows, 25, exclude_self=exclude_self)
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found[0], expected[0])
    truth_similarities, truth = stable_reference(rows, rows, 25, exclude_self)
    assert (found[1][:, 0] == truth[:, 0]).all()  # a duplicate's twin first, ties to the lower index


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_float16_memmap_is_searched_like_its_float32_values(tmp_path, precision):
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((900, 32)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    mapped = float16_memmap(tmp_path, rows)
    search = TorchKNN(precision=precision, memory="8MiB")
    found = search(mapped, mapped, 10, exclude_self=True)
    expected = search(np.asarray(mapped, dtype=np.float32), np.asarray(mapped, dtype=np.float32), 10,
                      exclude_self=True)
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found[0], expected[0])


_PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from compkit.neighbors import TorchKNN
    path, memory = sys.argv[1], sys.argv[2]
    reference = np.load(path, mmap_mode="r")
    query = np.ascontiguousarray(reference[:256], dtype=np.float32)
    search = TorchKNN(precision="bf16", memory=memory)
    search(query[:8], np.ascontiguousarray(reference[:4096]), 10)  # thread pools, kernels: not the search
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    similarities, indices = search(query, reference, 10)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"added": after - before, "first": int(indices[0, 0])}))
""")


def test_search_of_a_float16_memmap_stays_within_its_memory_budget(tmp_path):
    # 1,000,000 x 32 float16 is 64 MB mapped; a float32 copy of it alone would be 128 MB, a bf16 one 64 MB.
    rng = np.random.default_rng(2)
    path = tmp_path / "gallery.npy"
    gallery = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(1_000_000, 32))
    for start in range(0, len(gallery), 250_000):
        block = rng.standard_normal((250_000, 32)).astype(np.float32)
        gallery[start:start + 250_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
    gallery.flush()
    del gallery
    budget = 32 * 2**20
    result = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), str(budget)], capture_output=True,
                            text=True, timeout=300, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    mapped = 1_000_000 * 32 * 2
    assert report["first"] == 0  # each query row finds itself
    # What the search added to the process's peak: the mapped pages it read plus at most the budget (with
    # 24 MB for the allocator and torch's own); a float32 copy of the gallery would add 128 MB more.
    assert report["added"] <= mapped + budget + 24 * 2**20, report


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sharded_search_on_dask_equals_the_single_process_search(dask_client, tmp_path, precision):
    from compkit.neighbors.dask_knn import DaskKNN

    rng = np.random.default_rng(3)
    rows = rng.standard_normal((3000, 32)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows[1000:1300] = rows[:300]  # exact duplicates: tied neighbours
    mapped = float16_memmap(tmp_path, rows)
    single = TorchKNN("cpu", precision=precision, memory="8MiB")
    sharded = DaskKNN(dask_client, precision=precision, memory="8MiB")
    expected = single(mapped, mapped, 20, exclude_self=True)
    found = sharded(mapped, mapped, 20, exclude_self=True)  # memory map: each worker maps the file itself
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found[0], expected[0])
    query, gallery = rows[:700], rows[500:]  # in-memory arrays are scattered to the workers
    found = sharded(query, gallery, 15)
    expected = single(query, gallery, 15)
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found[0], expected[0])


def test_sharded_search_splits_both_sides_into_tasks(dask_client):
    from compkit.neighbors.dask_knn import DaskKNN, _ranges

    assert _ranges(3000, 512, 4) == [(0, 1024), (1024, 2048), (2048, 3000)]  # whole blocks only
    rows = tied_rows(1500, 16, seed=4)
    found = DaskKNN(dask_client, precision="fp32", memory="8MiB", query_tasks=3, reference_shards=3)(
        rows, rows, 12, exclude_self=True)
    truth_similarities, truth = stable_reference(rows, rows, 12, exclude_self=True)
    np.testing.assert_array_equal(found[1], truth)
    np.testing.assert_array_equal(found[0], truth_similarities)
    # bf16 on heavily tied rows: candidates tie at their cut-off, yet the shards give the single answer
    found = DaskKNN(dask_client, precision="bf16", memory="8MiB", query_tasks=3, reference_shards=3)(
        rows, rows, 12, exclude_self=True)
    expected = TorchKNN(precision="bf16", memory="8MiB")(rows, rows, 12, exclude_self=True)
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found[0], expected[0])


@needs_faiss
def test_ivf_reports_recall_against_exact_and_warns_when_low():
    from compkit.neighbors.ivf import FaissIVFKNN

    rng = np.random.default_rng(5)
    centres = rng.standard_normal((200, 32))
    rows = centres[rng.integers(0, 200, 8000)] + 0.5 * rng.standard_normal((8000, 32))
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    exhaustive = FaissIVFKNN(lists=32, probes=32, recall_sample=300)
    similarities, indices = exhaustive(rows, rows, 10, exclude_self=True)
    assert exhaustive.last_recall.recall == 1.0 and exhaustive.last_recall.sample == 300
    exact = FaissKNN()(rows, rows, 10, exclude_self=True)
    np.testing.assert_allclose(similarities, exact[0], atol=1e-5)
    assert (indices != np.arange(8000)[:, None]).all()
    narrow = FaissIVFKNN(lists=64, probes=1, recall_sample=300, warn_below=0.999)
    with pytest.warns(UserWarning, match=r"recall@10 0\.\d+ against exact on 300 queries"):
        narrow(rows, rows, 10, exclude_self=True)
    assert narrow.last_recall.recall < 0.999


@needs_faiss
def test_search_takes_the_neighbors_table(tmp_path):
    rows = tied_rows(600, 16, seed=6)
    exact = search(rows, rows, 8, backend=NeighborSettings(memory="16MiB"))
    np.testing.assert_array_equal(exact[1], search(rows, rows, 8, backend="torch")[1])
    assert type(make_search(NeighborSettings(index="ivf"))).__name__ == "FaissIVFKNN"
    assert type(make_search(NeighborSettings())).__name__ in ("TorchKNN", "CumlKNN")
