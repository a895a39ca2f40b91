"""Exact cosine top-k nearest neighbours behind one callable contract (see ``compkit.neighbors.base``).

    search = get_backend("auto")
    similarities, indices = search(l2_normalize(query), l2_normalize(reference), k=50)
    search = make_search(config.neighbors)  # the config's backend, memory budget, Dask cluster or IVF index

Dense searches are blocked to a memory budget (``memory``); ``dask_knn`` shards them over a dask.distributed
cluster with the same result; ``ivf`` is the one approximate search, opt-in, with its recall reported.
"""

from __future__ import annotations

from compkit.config import KNN_BACKENDS, NeighborSettings
from compkit.errors import CompkitError
from compkit.neighbors.base import KNNBackend, SearchResult, l2_normalize
from compkit.neighbors.cuml_knn import CumlKNN, cuml_available
from compkit.neighbors.faiss_knn import FaissKNN
from compkit.neighbors.memory import DEFAULT_MEMORY, parse_memory
from compkit.neighbors.sparse import (
    CumlSparseKNN,
    ScipySparseKNN,
    SparseKNNBackend,
    get_sparse_backend,
)
from compkit.neighbors.torch_knn import TorchKNN

BACKEND_NAMES = KNN_BACKENDS  # what `[neighbors] backend` and `--knn` accept

__all__ = [
    "BACKEND_NAMES",
    "CumlKNN",
    "CumlSparseKNN",
    "FaissKNN",
    "KNNBackend",
    "ScipySparseKNN",
    "SearchResult",
    "SparseKNNBackend",
    "TorchKNN",
    "get_backend",
    "get_sparse_backend",
    "l2_normalize",
    "make_search",
    "parse_memory",
]


def get_backend(name: str = "auto", *, memory: str | int = DEFAULT_MEMORY) -> KNNBackend:
    """Return the dense kNN search called ``name``: "auto", "torch", "faiss" or "cuml".

    "auto" picks the fastest exact search this machine can run: cuML where cuML and a CUDA GPU are there;
    else torch on the GPU; else torch on CPU with ``precision="auto"``, which scores big searches in bf16
    and re-ranks the candidates in fp32 where bf16 matmul is clearly faster (measured once per process,
    see ``torch_knn.cpu_bf16_speedup``), and runs in fp32 otherwise, where it is on par with faiss's flat
    index (see benchmarks/RESULTS-knn.md). "torch" is torch on the GPU if there is one, else on CPU.
    ``memory`` is torch's block budget (see ``compkit.neighbors.memory``).
    """
    if name not in BACKEND_NAMES:
        raise CompkitError(f"unknown kNN backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}")
    if name == "faiss":
        return FaissKNN()
    if name == "cuml" or (name == "auto" and cuml_available()):
        return CumlKNN()
    import torch

    return TorchKNN("cuda" if torch.cuda.is_available() else "cpu", memory=memory)


def make_search(settings: NeighborSettings) -> KNNBackend:
    """Return the dense search `[neighbors]` describes: its backend, or the IVF index, or its Dask cluster."""
    if settings.index == "ivf":
        from compkit.neighbors.ivf import FaissIVFKNN

        return FaissIVFKNN(lists=settings.ivf_lists, probes=settings.ivf_probes,
                           recall_sample=settings.recall_sample, memory=settings.memory)
    if settings.scheduler:
        from compkit.neighbors.dask_knn import DaskKNN

        return DaskKNN(settings.scheduler, memory=settings.memory)
    return get_backend(settings.backend, memory=settings.memory)
