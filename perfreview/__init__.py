"""perfreview: measure a decode workload in two configurations or builds, decide honestly whether
the change is real, explain where the time went, and write the PR review.

Flow: runner -> trace (events + runs + store) -> analysis -> compare -> report / plots.
"""

__version__ = "0.1.0"
