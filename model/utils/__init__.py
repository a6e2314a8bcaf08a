"""The machinery of the template: nothing here needs to be opened to change the model."""
