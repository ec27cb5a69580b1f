"""Model surgery: from a keep-set to a new, thinner keras.Model."""

from kerasprune.surgery.keep import keep_masks
from kerasprune.surgery.mask import mask_weights, masked_entries
from kerasprune.surgery.rebuild import rebuild

__all__ = ["rebuild", "keep_masks", "mask_weights", "masked_entries"]
