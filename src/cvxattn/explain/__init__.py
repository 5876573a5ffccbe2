"""Explanations of a fitted head that are exact by construction (SPEC.md §7).

- :func:`token_contributions` (n, s, c) and :func:`pair_contributions` (n, s, s, c): exact
  additive shares of every logit, per token and per (output, source) token pair;
- :func:`token_clusters`: each image's tokens grouped by the head's own similarity;
- :func:`spectrum`, :func:`block_norms`, :func:`rank_path`: the low-rank structure of the
  optimum;
- :mod:`cvxattn.explain.faithfulness`: deletion curves and foreground overlap, measured;
- :mod:`cvxattn.explain.figures` and :func:`write_gallery`: figures and a static HTML page.
"""

from .attributions import ROLES, pair_contributions, token_contributions
from .clusters import TokenClusters, token_clusters, token_profiles
from .gallery import measure, write_gallery
from .structure import block_norms, rank_path, spectrum

__all__ = ["token_contributions", "pair_contributions", "ROLES", "token_clusters",
           "TokenClusters", "token_profiles", "spectrum", "block_norms", "rank_path", "measure",
           "write_gallery"]
