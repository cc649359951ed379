"""Text-to-image search with one fused vector per item, as a vector index runs it.

    dalip embed -m model.safetensors --images photos/ --fused --out images.npz
    dalip embed -m model.safetensors --texts "a serrate ovate leaf" --fused --out queries.npz
    python examples/fused_search.py images.npz queries.npz --top-k 5

The fused vectors are unit vectors whose inner products are DALIP's fused similarity, so an
inner-product index (FAISS `IndexFlatIP`, or any vector database set to inner product / cosine)
ranks exactly as `model.similarity(..., mode="fused")`. FAISS is used when it is installed
(`pip install faiss-cpu`); otherwise numpy computes the same ranking.
"""

from __future__ import annotations

import argparse

import numpy as np


def search(index_vectors: np.ndarray, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row indices), each (N_queries, k), best first, by inner product."""
    top_k = min(top_k, len(index_vectors))
    try:
        import faiss
    except ImportError:
        scores = queries @ index_vectors.T  # (N_queries, N_index)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        return np.take_along_axis(scores, order, axis=1), order
    index = faiss.IndexFlatIP(index_vectors.shape[1])
    index.add(np.ascontiguousarray(index_vectors, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), top_k)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", help=".npz from `dalip embed --fused` (the items to search)")
    parser.add_argument("queries", help=".npz from `dalip embed --fused` (the queries)")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    with np.load(args.index) as index, np.load(args.queries) as queries:
        if "fused" not in index or "fused" not in queries:
            raise SystemExit("both files need a 'fused' array: write them with `dalip embed --fused`")
        scores, rows = search(index["fused"], queries["fused"], args.top_k)
        for query, row_scores, row_indices in zip(queries["items"], scores, rows):
            print(query)
            for score, row in zip(row_scores, row_indices):
                print(f"  {score:+.4f}  {index['items'][row]}")


if __name__ == "__main__":
    main()
