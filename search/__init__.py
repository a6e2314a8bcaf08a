"""Hyperparameter search around the model: search.json's space, one train.py run per trial."""
