"""A bottleneck layer inside a small autoencoder through `.keras` and SavedModel files."""

import keras
import numpy as np
import tensorflow as tf


def check_round_trips(bottleneck, depth, patches, tmp_path):
  """Trains Dense(depth) -> bottleneck -> Dense(48) for an epoch on real patches, then
  checks that the `.keras` file and the exported SavedModel give the same layer config,
  weights and outputs."""
  inputs = keras.Input((48,))
  quantized = bottleneck(keras.layers.Dense(depth)(inputs))
  model = keras.Model(inputs, keras.layers.Dense(48)(quantized))
  model.compile("adam", "mse")
  model.fit(patches[:256], patches[:256], batch_size=64, epochs=1, verbose=0)
  model.save(tmp_path / "model.keras")
  loaded = keras.models.load_model(tmp_path / "model.keras")
  restored = loaded.get_layer(bottleneck.name)
  assert restored.get_config() == bottleneck.get_config()
  for a, b in zip(bottleneck.weights, restored.weights):
    assert a.path == b.path
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  x = patches[300:340]
  expected = model.predict(x, verbose=0)
  np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
  model.export(str(tmp_path / "export"), verbose=False)
  served = tf.saved_model.load(str(tmp_path / "export"))
  np.testing.assert_allclose(served.serve(x).numpy(), expected, atol=1e-6)
