"""Schemathesis over the service's OpenAPI schema: whatever the schema admits, and the negative
cases it derives from it, the service never answers with a 5xx."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.serving.conftest import TOKEN, Env


def test_no_input_makes_a_server_error(env: Env) -> None:
    with env.client(treatment_share=0.5) as client:  # the lifespan has started the service
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/price", "/v1/prices", "/v1/outcomes"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=40,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def run(case: Any) -> None:
                # with the admin token, so that the admin endpoints' bodies are exercised too
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error]
                )

            run()
