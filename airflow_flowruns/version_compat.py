"""Which Airflow this provider runs on, for the features that need a newer one than the oldest supported.

Everything else imports from ``airflow.providers.common.compat.sdk``, as the official providers do, and
works the same on every supported Airflow. A feature that needs a newer Airflow than the one running
is switched off and says so in one log line per process (``missing_feature``), never an error.
"""

from __future__ import annotations

import logging
from functools import cache

from packaging.version import Version

log = logging.getLogger(__name__)


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    from airflow import __version__

    version = Version(__version__)
    return version.major, version.minor, version.micro


AIRFLOW_V_3_2_PLUS: bool = get_base_airflow_version_tuple() >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS: bool = get_base_airflow_version_tuple() >= (3, 3, 0)


@cache
def missing_feature(feature: str, needs: str) -> None:
    """Say once per process that ``feature`` is off because it needs Airflow ``needs`` or later."""
    from airflow import __version__

    log.warning("%s needs Airflow %s or later; this is Airflow %s, so it is off.", feature, needs, __version__)


__all__ = ["AIRFLOW_V_3_2_PLUS", "AIRFLOW_V_3_3_PLUS", "get_base_airflow_version_tuple", "missing_feature"]
