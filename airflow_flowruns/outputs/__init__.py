"""Land a run's outputs: the readers' shared parts (:mod:`.base`), the normalized shape of ``outputs.json``
(:mod:`.model`), and the landing that writes them (:mod:`.landing`). Each platform's reader is its folder's
``outputs.py`` (``airflow_flowruns.platforms.output_reader``)."""
