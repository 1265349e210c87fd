"""The storage under test, once per backend: local files and a real S3 API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.settings import StorageSettings
from services.common.storage import Storage, open_storage


@pytest.fixture(
    name="storage",
    params=["local", pytest.param("s3", marks=pytest.mark.s3)],
)
async def fixture_storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """One storage per backend, opened through ``open_storage`` as the services do."""
    if request.param == "local":
        settings = StorageSettings(backend="local", data_dir=tmp_path / "data")
    else:
        settings = request.getfixturevalue("s3_storage_settings")
    async with open_storage(settings) as storage:
        yield storage
