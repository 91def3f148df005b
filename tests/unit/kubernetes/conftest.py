"""Fixtures for the Kubernetes builder tests (helpers live in k8s_support)."""

from __future__ import annotations

import pytest
from k8s_support import SPECS

from scaling.kubernetes import Manifest, build_manifests
from scaling.model import PhaseSpec


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> PhaseSpec:
    return SPECS[request.param]()


@pytest.fixture
def manifests(spec: PhaseSpec) -> list[Manifest]:
    return build_manifests(spec)
