"""The .h5 path: a small Keras U-Net made here loads through hybrid.keras_unet.load_keras_h5."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # TensorFlow is optional; Keras 3 runs on torch
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

from restorekit.hybrid import engine, keras_unet, unet  # noqa: E402


def _small_keras_unet():
    L = keras.layers
    inp = keras.Input((None, None, 3))
    e1 = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    p1 = L.MaxPooling2D(2)(e1)
    e2 = L.Conv2D(16, 3, padding="same", activation="relu")(p1)
    p2 = L.MaxPooling2D(2)(e2)
    m = L.Conv2D(16, 3, padding="same", activation="relu")(p2)
    u2 = L.Concatenate()([L.UpSampling2D(2)(m), e2])
    d2 = L.Conv2D(16, 3, padding="same", activation="relu")(u2)
    u1 = L.Concatenate()([L.UpSampling2D(2)(d2), e1])
    d1 = L.Conv2D(8, 3, padding="same", activation="relu")(u1)
    out = L.Conv2D(3, 1, activation="sigmoid")(d1)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def h5_path(tmp_path_factory):
    if keras.backend.backend() != "torch" and "tensorflow" not in keras.backend.backend():
        pytest.skip(f"keras backend {keras.backend.backend()}")
    keras.utils.set_random_seed(0)
    model = _small_keras_unet()
    path = str(tmp_path_factory.mktemp("keras") / "unet.h5")
    model.save(path)
    return path, model


def test_h5_unet_loads_and_matches_keras(h5_path, rng):
    path, model = h5_path
    handle = keras_unet.load_keras_h5(path)
    assert handle.size_multiple == 4  # two pooling layers
    assert "Keras" in handle.arch and handle.source == path
    img = rng.random((36, 44, 3)).astype(np.float32)
    out, report = unet.run(handle, img, device="cpu")
    assert out.shape == img.shape
    # reference: Keras itself on the same input
    ref = np.asarray(keras.ops.convert_to_numpy(model(img[None])))[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)
    odd = rng.random((37, 45, 3)).astype(np.float32)  # not a multiple of 4: the runner pads and crops
    assert unet.run(handle, odd, device="cpu")[0].shape == odd.shape


def test_h5_unet_plugs_into_the_engine(h5_path, rng):
    path, _ = h5_path
    r = engine.HybridRestorer(unet=unet.load_unet_file(path), use_shipped=False)
    img = rng.random((32, 32, 3)).astype(np.float32)
    out, info = r.restore(img, "deep_learning")
    assert out.shape == img.shape and info.method == "deep_learning"
    assert "Keras" in str(info.parameters["model"]) or info.parameters["model"] == path


def test_not_a_keras_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "fake.h5"
    bad.write_bytes(b"definitely not hdf5")
    with pytest.raises(ValueError, match="fake.h5"):
        keras_unet.load_keras_h5(str(bad))
