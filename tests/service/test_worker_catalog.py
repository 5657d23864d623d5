"""API-node preflight from the workers' model adverts, on real SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from store_fixtures import pg, store  # noqa: F401 - fixtures
from restora.config import Settings
from restora.errors import ModelNotInstalled
from restora.models.registry import Registry
from restora.pipeline.options import EnhanceOptions, PhotoOptions
from restora.service.catalog import ClusterCatalog, advertise, withdraw
from restora.service.tools import preflight_faces, preflight_photo

GFPGAN = {"id": "gfpgan-v1.4", "task": "face-restoration", "arch": "gfpgan_v1_clean"}
RETINA = {"id": "retinaface-resnet50", "task": "face-detection", "arch": "retinaface"}
CUSTOM_DET = {"id": "my-yunet", "task": "face-detection", "arch": "yunet"}


@pytest.fixture
def catalog(store, tmp_path):
    # the API node's own registry: built-ins, none installed on its disk
    return ClusterCatalog(store, Registry.from_settings(Settings(home=tmp_path / "api")),
                          advert_interval_s=10.0, cache_s=0.0)


def test_a_model_no_live_worker_has_is_refused_with_the_pull_command(store, catalog):
    advertise(store, "w1", [GFPGAN, RETINA])
    advertise(store, "w2", [CUSTOM_DET])
    models = catalog.current()
    assert models is not None
    preflight_faces(models, EnhanceOptions(model="gfpgan"))  # w1 has it
    preflight_faces(models, EnhanceOptions(model="gfpgan", detector="my-yunet"))  # w2's own
    with pytest.raises(ModelNotInstalled) as err:
        preflight_faces(models, EnhanceOptions(model="codeformer"))
    assert err.value.http_status == 503 and err.value.details["model"] == "codeformer"
    assert "no worker has model 'codeformer'" in err.value.message
    assert "restora models pull" in err.value.message
    with pytest.raises(ModelNotInstalled):
        preflight_faces(models, EnhanceOptions(model="gfpgan", detector="yunet"))
    with pytest.raises(ModelNotInstalled):
        preflight_photo(models, PhotoOptions(colorize=True))


def test_adverts_are_unions_and_a_withdrawn_worker_no_longer_counts(store, catalog):
    advertise(store, "w1", [GFPGAN, RETINA])
    advertise(store, "w2", [{"id": "codeformer", "task": "face-restoration",
                             "arch": "codeformer"}, RETINA])
    preflight_faces(catalog.current(), EnhanceOptions(model="codeformer"))
    withdraw(store, "w2")
    with pytest.raises(ModelNotInstalled):
        preflight_faces(catalog.current(), EnhanceOptions(model="codeformer"))
    advertise(store, "w1", [GFPGAN])  # re-advert replaces the row: the detector went away
    with pytest.raises(ModelNotInstalled):
        preflight_faces(catalog.current(), EnhanceOptions(model="gfpgan"))


def test_nothing_is_refused_without_a_fresh_advert_or_with_a_silent_worker(store, catalog):
    assert catalog.current() is None  # no worker yet: jobs queue for the workers to come
    advertise(store, "old", [GFPGAN, RETINA], now=time.time() - 31.0)  # > 3 intervals old
    assert catalog.current() is None
    advertise(store, "w1", [GFPGAN, RETINA])
    assert catalog.current() is not None
    advertise(store, "custom-tools", None)  # a worker without a model runtime does not say
    assert catalog.current() is None
