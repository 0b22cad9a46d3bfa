"""`zhcls select`: which texts of an unlabelled pool to label first, for `zhcls fewshot`.

Diversity by embedding clusters: k-means with k clusters on the pool's sentence embeddings, then each
centroid's nearest text (a cluster's most typical member), picked in turn by `analysis.sparse`'s
`nearest_in_turn` (the pick `analyze sparse --strategy annotate` makes), so no text is taken twice. k texts
that cover the pool's topics beat k random ones, which repeat the frequent topics and miss the rare.
"""
from __future__ import annotations

import numpy as np

from zhcls.analysis.sparse import nearest_in_turn
from zhcls.errors import ZhclsError
from zhcls.fewshot.config import SelectConfig
from zhcls.fewshot.embed import embedder, read_texts
from zhcls.io import atomic_open, check_output_files


def diverse(vectors: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """Indices of ``k`` rows of unit vectors: the nearest row to each k-means centroid, in turn."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors)
    centroids = km.cluster_centers_ / np.maximum(np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True), 1e-12)
    picked = nearest_in_turn(centroids @ vectors.T, k)
    if len(picked) < k:  # a centroid with no positive cosine to any row: fill with the rows farthest from the picks
        rest = np.setdiff1d(np.arange(len(vectors)), picked)
        closest = (vectors[rest] @ vectors[picked].T).max(axis=1) if picked else np.zeros(len(rest))
        picked += [int(i) for i in rest[np.argsort(closest, kind="stable")][:k - len(picked)]]
    return picked


def select(config: SelectConfig | None = None, **kwargs) -> list[str]:
    """The ``k`` texts to label first, written to ``output_file`` in the pool's order; returns them."""
    cfg = config or SelectConfig(**kwargs)
    if cfg.k < 1:
        raise ZhclsError(f"--k {cfg.k}: must be at least 1")
    check_output_files([cfg.output_file], flag="--output_file", inputs=[cfg.pool])
    texts = list(dict.fromkeys(read_texts(cfg.pool)))  # a text repeated in the pool is one candidate
    if cfg.k > len(texts):
        raise ZhclsError(f"--k {cfg.k}: more than the {len(texts)} distinct texts of {cfg.pool}")
    predictor = embedder(cfg.params_path, backend=cfg.backend, device=cfg.device, batch_size=cfg.batch_size,
                         max_seq_length=cfg.max_seq_length)
    vectors = predictor.embed(texts, progress=cfg.progress)
    chosen = [texts[i] for i in sorted(diverse(vectors, cfg.k, cfg.seed))]
    with atomic_open(cfg.output_file) as f:
        f.write("".join(f"{t}\n" for t in chosen))
    return chosen
