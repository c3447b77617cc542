"""Which Airflow this provider runs on, for the features that need a newer one than the oldest supported.

Everything else imports from ``airflow.providers.common.compat.sdk``, as the official providers do, and
works the same on every supported Airflow. A feature that needs a newer Airflow than the one running
is switched off and says so in one log line per process (``missing_feature``), never an error. The one
dependency an Airflow line cannot run with (``check_can_defer``) fails a deferrable task before it starts
anything.
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


@cache
def _fernet_takes_airflow_3_1_mark() -> bool:
    """Airflow 3.1 marks its ``MultiFernet`` with an ``is_encrypted`` attribute when it encrypts trigger kwargs;
    cryptography 51 made ``MultiFernet`` a Rust object that takes no new attribute, so that deferral fails
    inside Airflow. Probed, not read from version numbers, so a fixed release of either passes."""
    from cryptography.fernet import Fernet, MultiFernet

    fernet = MultiFernet([Fernet(Fernet.generate_key())])
    try:
        fernet.is_encrypted = True  # type: ignore[attr-defined]  # what Airflow 3.1's get_fernet does
    except AttributeError:
        return False
    return True


def check_can_defer() -> None:
    """Fail a deferrable task before it starts a run when this Airflow cannot store its trigger (an Airflow
    without a Fernet key stores trigger kwargs unencrypted, and defers)."""
    if AIRFLOW_V_3_2_PLUS or _fernet_takes_airflow_3_1_mark():
        return
    from airflow.providers.common.compat.sdk import conf

    if not conf.get("core", "fernet_key", fallback=""):
        return
    from cryptography import __version__ as cryptography_version

    from airflow_flowruns.exceptions import FlowRunsConfigError

    raise FlowRunsConfigError(
        f"Airflow 3.1 cannot defer a task with cryptography {cryptography_version} installed: it fails storing "
        "the trigger ('MultiFernet' object has no attribute 'is_encrypted'). "
        "Install cryptography<51 (pip install 'cryptography<51') or Airflow 3.2 or later, "
        "or set deferrable=False to wait in the worker."
    )


__all__ = [
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "check_can_defer",
    "get_base_airflow_version_tuple",
    "missing_feature",
]
