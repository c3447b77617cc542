"""``make e2e``: the provider under a real Airflow, a faulty emulator, a killed triggerer and a killed worker."""
