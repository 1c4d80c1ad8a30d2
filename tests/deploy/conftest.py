"""Fixtures of the deploy checks: each whole-system overlay under k8s/overlays rendered once, the CRDs of
../shared/schemas, and compose.yaml."""

import pytest

import deploylib


def pytest_generate_tests(metafunc):
    if "overlay" in metafunc.fixturenames:
        metafunc.parametrize("overlay", [p.name for p in deploylib.SYSTEM_OVERLAYS])


_rendered: dict[str, list[dict]] = {}


@pytest.fixture
def docs(overlay) -> list[dict]:
    """The rendered documents of one overlay."""
    if overlay not in _rendered:
        _rendered[overlay] = deploylib.render(deploylib.REPO / "k8s" / "overlays" / overlay)
    return _rendered[overlay]


@pytest.fixture(scope="session")
def crds():
    """CRD schemas by (group, version, kind); skips, saying why, when ../shared/schemas is absent."""
    if not deploylib.SCHEMAS.is_dir():
        pytest.skip(f"{deploylib.SCHEMAS} is missing (a clone without ../shared): the CRD and compose schema checks need it")
    return deploylib.load_crds()


@pytest.fixture(scope="session")
def compose() -> dict:
    return deploylib.load_compose()
