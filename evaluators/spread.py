"""How sure a measured median is: a distribution-free confidence interval from order statistics.

The functions live in search/runtime/portable.py, which a bundle's verify.py uses too, so the
search and the deployment check compute the interval the same way.
"""

from search.runtime.portable import Z_95, median_ci, relative_half_width

__all__ = ["Z_95", "median_ci", "relative_half_width"]
