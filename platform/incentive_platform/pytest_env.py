"""The test suite's environment, loaded by pytest (`-p` in pyproject.toml) before Django starts.

The suite runs with DEBUG off, as production does, so it needs a secret: a throwaway one, unless
the environment already gives one.
"""

import os
import secrets

os.environ.setdefault("SECRET_KEY", "test-only-" + secrets.token_urlsafe(32))
