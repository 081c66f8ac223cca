"""Candidate retrieval and ranking for sequential recommendation.

Sources propose items for a user from what the user did (each one module):
``popularity`` (MostPop), ``transitions`` (ItemKNN over adjacent items, EVAL.md E3's baseline),
``baskets`` (co-occurrence inside baskets: items bought at one time), ``content`` (items whose
catalog attributes resemble the user's recent items), ``dense`` (user-tower vectors against item
vectors, exact inner product). ``candidates`` takes each
source's top-N and merges them with per-source scores/ranks as
features; ``ranker`` learns to order the merged candidates; ``recommender`` runs the sources over
users in chunks and turns ranked candidates into full-ranking scores; ``export`` writes the
candidates and sequences files the rerankers read.

Every source scores a chunk of users at once: ``scores(histories, rows) -> (len(histories), n_items)``,
so the same matrix gives a baseline's full ranking and a source's candidates. Final lists exclude
the user's history; candidate lists may hold history items (see ``recommender``).
"""
