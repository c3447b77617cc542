"""Land a run's outputs: the readers' shared parts (``.base``), the normalized shape of ``outputs.json``
(``.model``), and the landing that writes them (``.landing``). Each platform's reader is its folder's
``outputs.py`` (``airflow_flowruns.platforms.output_reader``)."""
