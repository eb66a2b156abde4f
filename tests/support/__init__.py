"""What the tests share: payload builders, the app test bed, servers and doubles, fixtures' logic.

Test modules import it as `support` (`from support.beds import make_bed`): pytest puts tests/
on sys.path because tests/ itself is no package. No test module imports another test module;
what two of them need lives here, and fixtures that several modules use live in
tests/conftest.py (built on the helpers here).
"""

from __future__ import annotations

from pathlib import Path

#: This package, the tests' directory and the repository root.
SUPPORT = Path(__file__).resolve().parent
TESTS = SUPPORT.parent
REPO = TESTS.parent
