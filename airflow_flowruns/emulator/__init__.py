"""A local emulator of the flow platforms' HTTP APIs, for tests, demos and benchmarks."""

from airflow_flowruns.emulator.app import create_app
from airflow_flowruns.emulator.config import EmulatorConfig, Scenario, load_config
from airflow_flowruns.emulator.server import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer", "Scenario", "create_app", "load_config"]
