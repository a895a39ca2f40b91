"""Exact cosine top-k nearest neighbours behind one callable contract (see ``compkit.neighbors.base``).

    search = get_backend("auto")
    similarities, indices = search(l2_normalize(query), l2_normalize(reference), k=50)
"""

from __future__ import annotations

from compkit.config import KNN_BACKENDS
from compkit.errors import CompkitError
from compkit.neighbors.base import KNNBackend, SearchResult, l2_normalize
from compkit.neighbors.cuml_knn import CumlKNN, cuml_available
from compkit.neighbors.faiss_knn import FaissKNN
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
]


def get_backend(name: str = "auto") -> KNNBackend:
    """Return the dense kNN search called ``name``: "auto", "torch", "faiss" or "cuml".

    "auto" picks the fastest exact search this machine can run: cuML where cuML and a CUDA GPU are there;
    else torch on the GPU; else torch on CPU with ``precision="auto"``, which scores big searches in bf16
    and re-ranks the candidates in fp32 where bf16 matmul is clearly faster (measured once per process,
    see ``torch_knn.cpu_bf16_speedup``), and runs in fp32 otherwise, where it is on par with faiss's flat
    index (see benchmarks/RESULTS-knn.md). "torch" is torch on the GPU if there is one, else on CPU.
    """
    if name not in BACKEND_NAMES:
        raise CompkitError(f"unknown kNN backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}")
    if name == "faiss":
        return FaissKNN()
    if name == "cuml" or (name == "auto" and cuml_available()):
        return CumlKNN()
    import torch

    return TorchKNN("cuda" if torch.cuda.is_available() else "cpu")
