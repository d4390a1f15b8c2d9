"""Fixtures of the mapped-view tests (:mod:`neoarray.vm`): ``mode`` runs a test under
userfaultfd and under the mprotect fallback; ``native_cluster`` is one real cluster
(a master and a storage node, local processes) for the session."""
import pytest

from neoarray import vm
from tests.conftest import running_cluster

MODES = [m for m in ("uffd", "mprotect") if vm.available()[m]]


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture(scope="session")
def native_cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("neo-native"))
