"""``airflow flowruns`` (Airflow 3.2+, through the provider info's ``cli`` entry) and the ``flowruns`` console
script (every Airflow line): the same commands, defined once in ``.definition``, to list, read and cancel
runs, find the runs left over from tasks that are gone, and check a connection end to end."""
