import os
import time

import pytest


@pytest.fixture(autouse=True, scope="session")
def utc():
    """Log timestamps are wall-clock times: pin the zone so that snapshots agree."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()
