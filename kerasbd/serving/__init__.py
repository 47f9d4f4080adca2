"""Serving a model in the field: the BadNet/GoodNet ensemble that quarantines disagreements, and the durable
store of quarantined inputs (NNoculation's deployment stage)."""
