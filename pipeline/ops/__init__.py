"""Operations: the hourly monitor (KPIs, drift) and where it publishes."""
