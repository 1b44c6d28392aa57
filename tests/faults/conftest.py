"""The fault cases share the service's test environment (`tests.serving.conftest.env`)."""

from tests.serving.conftest import env

__all__ = ["env"]
