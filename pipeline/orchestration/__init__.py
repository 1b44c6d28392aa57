"""Running things: Airflow in-process (`dag.test`), the local stack (`pricing up`), process trees."""
