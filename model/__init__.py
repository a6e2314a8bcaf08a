"""The template's building blocks: input_fn (data), model_fn (network), training, evaluation."""
