"""Shared logic for the skin-lesion-lab notebooks: data, models, training, evaluation."""
