"""FfDL manifests imported as job manifests."""

import pytest
import yaml

from trainyard.manifest.ffdl import import_ffdl_manifest
from trainyard.manifest.schema import FrameworkName, ManifestError

FFDL = """\
name: TF_convolutional_network
description: Convolutional network model using tensorflow
version: "1.0"
gpus: 1
cpus: 0.5
memory: 1Gb
learners: 2
data_stores:
  - id: sl-internal-os
    type: mount_cos
    training_data:
      container: mnist_training_data
    training_results:
      container: mnist_trained_model
    connection:
      auth_url: http://s3.example:9000
      user_name: test
      password: test
framework:
  name: tensorflow
  version: "1.5.0-py3"
  command: >
    python3 convnet.py --images ${DATA_DIR}/train-images.gz
      --out $RESULT_DIR/model --workers $NUM_LEARNERS --keep $DATA_DIR_OLD
evaluation_metrics:
  type: tensorboard
  in: "$JOB_STATE_DIR/logs/tb"
"""


def test_ffdl_import():
    manifest = import_ffdl_manifest(FFDL, tenant="acme")

    assert manifest.name == "tf-convolutional-network"
    assert manifest.description == "Convolutional network model using tensorflow"
    assert manifest.tenant == "acme"
    assert manifest.framework.name is FrameworkName.TENSORFLOW
    assert manifest.framework.version == "1.5.0-py3"
    assert manifest.code.path == "."
    assert manifest.command == (
        "python3 convnet.py --images ${TRAINYARD_DATA_DIR}/train-images.gz\n"
        "  --out $TRAINYARD_RESULT_DIR/model --workers $TRAINYARD_NUM_LEARNERS --keep $DATA_DIR_OLD"
    )
    assert manifest.data is not None
    assert manifest.data.path == "mnist_training_data"
    assert (manifest.resources.gpus, manifest.resources.cpus) == (1, 0.5)
    assert (manifest.resources.memory, manifest.resources.learners) == (10**9, 2)
    assert manifest.evaluation is None


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        pytest.param("1Gb", 10**9, id="gb-is-decimal"),
        pytest.param("512MB", 512 * 10**6, id="mb"),
        pytest.param("1000MiB", 1000 * 2**20, id="mib-is-binary"),
        pytest.param("8GiB", 8 * 2**30, id="gib"),
        pytest.param("2 gib", 2 * 2**30, id="space-and-lowercase"),
    ],
)
def test_ffdl_memory_units(memory, expected):
    ffdl = yaml.safe_load(FFDL) | {"memory": memory}

    assert import_ffdl_manifest(ffdl, tenant="acme").resources.memory == expected


@pytest.mark.parametrize(
    ("changes", "image", "field", "hint"),
    [
        pytest.param(
            {"memory": "1000"},
            None,
            "memory",
            "use a number with a unit MB, MiB, GB",
            id="memory-without-unit",
        ),
        pytest.param(
            {"framework": {"name": "caffe", "version": "1.0", "command": "caffe train"}},
            None,
            "framework.name",
            "pass an image",
            id="framework-without-trainyard-image",
        ),
        pytest.param({"gpus": 0.5}, None, "resources.gpus", "valid integer", id="fractional-gpus"),
        pytest.param(
            {"data_stores": [{"training_data": {"container": "../other"}}]},
            None,
            "data.path",
            "leaves the tenant's storage",
            id="container-outside-storage",
        ),
    ],
)
def test_ffdl_import_errors(changes, image, field, hint):
    ffdl = yaml.safe_load(FFDL) | changes

    with pytest.raises(ManifestError) as caught:
        import_ffdl_manifest(ffdl, tenant="acme", image=image)

    [(path, message)] = caught.value.problems
    assert path == field
    assert hint in message


def test_ffdl_framework_without_image_imports_as_custom_with_one():
    ffdl = yaml.safe_load(FFDL) | {
        "framework": {"name": "caffe", "version": "1.0", "command": "caffe train"}
    }

    manifest = import_ffdl_manifest(ffdl, tenant="acme", image="registry.example/caffe:1.0")

    assert manifest.framework.name is FrameworkName.CUSTOM
    assert manifest.framework.image == "registry.example/caffe:1.0"


def test_ffdl_import_needs_a_valid_tenant():
    with pytest.raises(ManifestError) as caught:
        import_ffdl_manifest(FFDL, tenant="Acme Corp")

    assert [path for path, _ in caught.value.problems] == ["tenant"]
