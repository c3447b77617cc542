"""What tests share: the emulator's control API, Airflow under test, a hostile server, run helpers."""
