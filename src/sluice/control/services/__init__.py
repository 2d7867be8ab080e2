"""One module per AWS service; each holds a class whose methods are the operations."""
