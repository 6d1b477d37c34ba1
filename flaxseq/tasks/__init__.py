"""Training tasks: how each model meets its data, loss and metrics (`classify`, `tag`, `seq2seq`)."""
