"""What a run leaves behind, written from values (nothing is read back from disk).

* :mod:`~algzu.reports.suite`: a suite's tidy tables, the leaderboard, MSE-vs-FLOPs plots
  and provenance (``write_results`` returns ``{path: content}``).
* :mod:`~algzu.reports.html`: the same results as one self-contained page, ``index.html``.
* :mod:`~algzu.reports.zoo`: the shipped zoo's accuracy against ARC's AlgZoo tables
  (``results/zoo_accuracy.md``).
"""
