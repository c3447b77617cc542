from airflow_flowruns.emulator.cli import main

main()
