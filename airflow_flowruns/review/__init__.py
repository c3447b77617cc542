"""Review in Airflow: a run that stops for human review becomes an Airflow Required Action.

``ask`` builds the Required Action from a run and its outputs and reads an answer into a decision, without
any I/O; ``items`` writes and reads the Required Action through Airflow's task SDK.
"""
