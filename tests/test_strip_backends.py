"""strip, fold_constants and compensate="mean" on every backend: the cases of
test_strip.py that ``make test`` runs again under JAX and PyTorch (BACKEND_TESTS), each
against the same numpy reference."""

import keras
import pytest
from test_strip import (  # noqa: F401  (collected here as well)
    test_a_constant_folds_into_a_valid_convolution_as_its_window_sum,
    test_constants_of_both_branches_of_an_add_fold_into_the_next_dense_bias_as_numpy_says,
    test_gradual_pruner_compensate_mean_folds_the_removed_units_into_the_next_bias,
    test_prune_compensate_mean_folds_the_removed_units_mean_activation_as_numpy_says,
)
from test_strip import (
    test_strip_removes_channels_whose_batchnorm_gamma_and_beta_are_zero_with_equal_outputs as _strip_case,
)

# on TensorFlow, test_strip.py runs them
pytestmark = pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                                reason="run by test_strip.py on TensorFlow")


def test_strip_removes_the_channels_a_batchnorm_silences_in_a_vgg_with_equal_outputs(rng):
    _strip_case("vgg", rng)
