"""How many examples a property test draws, under the loaded hypothesis profile.

The ``default`` profile (tests/conftest.py) draws 40% of a test's nominal count, at least 3;
``pytest --hypothesis-profile=ci-long`` draws 4x the nominal count. Write
``@settings(max_examples=examples(150), deadline=None)``.
"""

from __future__ import annotations

from hypothesis import settings

__all__ = ["examples"]


def examples(nominal: int) -> int:
    """``nominal`` scaled by the current profile's ``max_examples`` (100 is the scale's 1x)."""
    return max(3, nominal * settings().max_examples // 100)
