"""Toy: a small document API made up to show what a platform is: one folder and one ``register`` call.

It lives with the tests, not in the package, and is registered only by the test that proves a platform can
be added without touching the package (``tests/test_toy_platform.py``).
"""

from airflow_flowruns.platforms.facts import PlatformFacts

FACTS = PlatformFacts(
    name="toy",
    label="Toy",
    default_base_url="https://api.toy.example/toy/v1",
    base_path="/toy/v1",
    integration_url="https://toy.example",
    package=__name__,
)
