"""Apache Airflow provider for document-AI flow platforms."""

__version__ = "0.1.0"
