"""Sub-commands of the ``mmretrieve`` CLI, one module each; shared argument helpers in _common."""
