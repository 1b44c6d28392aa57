"""Data: the lake, the catalogue, point-of-sale ingest, daily features and the validation gate."""
